"""Milliseconds to escrow one key: ``recovery_block.seal`` of an RSA-2048 private key.

The key and the recovery service's transport key (RSA-3072, as ``recovery-service
init`` makes it) are generated once, before timing: key generation is not escrow.
Each run seals the same key again (PKCS#8, a fresh AES-256-GCM key and nonce, the AES
key RSA-OAEP-wrapped to the transport key), which is what the Key Manager does for
every new key before it is delivered. Nothing is written to a database.

    python -m benchmarks.bench_escrow                    # 2,000 runs, OAEP SHA-256, hybrid
    python -m benchmarks.bench_escrow --wrap rsa-oaep    # the first format: RSA-OAEP alone
    python -m benchmarks.bench_escrow --runs 5000 --oaep-hash sha1

With `--wrap hybrid-mlkem768` (the default of new instances) the AES key is wrapped
with RSA-OAEP and ML-KEM-768 together (one encapsulation and one HKDF more).

Target: mean and p99 <= 5 ms; with the hybrid wrap, mean <= 2 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common

TARGET_MS = 5.0
WARMUP = 20


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000, help="timed seals (at least 1000)")
    parser.add_argument("--quick", action="store_true", help="1,000 runs")
    parser.add_argument(
        "--oaep-hash", choices=("sha1", "sha256", "sha384", "sha512"), default="sha256"
    )
    parser.add_argument(
        "--wrap", choices=("rsa-oaep", "hybrid-mlkem768"), default="hybrid-mlkem768"
    )
    parser.add_argument("--transport-key-type", choices=("rsa3072", "rsa4096"), default="rsa3072")
    args = common.parse_args(parser)
    runs = 1000 if args.quick else max(1000, args.runs)

    from cryptography.hazmat.primitives.asymmetric import mlkem, rsa

    from mailpki.keystore.keys import RSA_SIZES, generate_private_key
    from mailpki.keystore.recovery_block import TransportKey, open_block, seal

    transport_private = rsa.generate_private_key(65537, RSA_SIZES[args.transport_key_type])
    mlkem_private = mlkem.MLKEM768PrivateKey.generate()
    transport = TransportKey(
        transport_private.public_key(), args.oaep_hash, mlkem_private.public_key(), args.wrap
    )
    key = generate_private_key("rsa2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    common.log(
        f"sealing one RSA-2048 key {runs:,} times to an {args.transport_key_type} transport "
        f"key ({args.wrap}, OAEP {args.oaep_hash})"
    )

    # Warm up, and check once that what is timed is a block the service could open.
    from mailpki.keystore.hybrid_wrap import hybrid_unwrap, parse_hybrid
    from mailpki.keystore.recovery_block import oaep, split_unwrapped

    block = seal(key, "rsa2048", transport)
    if args.wrap == "rsa-oaep":
        plain = transport_private.decrypt(block.wrapped_key, oaep(args.oaep_hash))
    else:
        plain = hybrid_unwrap(
            parse_hybrid(block.wrapped_key),
            rsa_decrypt=lambda ct: transport_private.decrypt(ct, oaep(args.oaep_hash)),
            mlkem_key=mlkem_private,
        )
    aes_key, _ = split_unwrapped(plain)
    assert open_block(block, aes_key, key.public_key()).private_numbers() == key.private_numbers()
    for _ in range(WARMUP):
        seal(key, "rsa2048", transport)

    timings: list[float] = []
    clock = time.perf_counter
    with common.Progress("seal", runs) as progress:
        for n in range(runs):
            t0 = clock()
            seal(key, "rsa2048", transport)
            timings.append((clock() - t0) * 1000)
            if n % 100 == 0:
                progress.update(n)
        progress.update(runs)

    ordered = sorted(timings)
    mean = statistics.fmean(timings)
    p50 = statistics.median(ordered)
    p99 = percentile(ordered, 0.99)
    goal = 2.0 if args.wrap == "hybrid-mlkem768" else TARGET_MS
    print(
        f"escrow (seal, {args.wrap}) of one RSA-2048 key, {runs:,} runs: mean {mean:.3f} ms, "
        f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {ordered[-1]:.3f} ms "
        f"(target <= {goal:g} ms)"
    )
    common.emit(
        {
            "benchmark": "bench_escrow",
            "runs": runs,
            "oaep_hash": args.oaep_hash,
            "wrap": args.wrap,
            "transport_key_type": args.transport_key_type,
            "machine": common.machine(),
            "mean_ms": round(mean, 4),
            "p50_ms": round(p50, 4),
            "p99_ms": round(p99, 4),
            "max_ms": round(ordered[-1], 4),
            "targets": [
                common.target(
                    f"escrow (seal, {args.wrap}) RSA-2048, mean", round(mean, 3), "ms", goal, "<="
                ),
                common.target("escrow (seal) RSA-2048, p99", round(p99, 3), "ms", TARGET_MS, "<="),
            ],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
