"""Blocks per second of the re-wrap inside the Key Recovery Service (`keys rewrap`).

A throwaway instance with its embedded recovery service (software keys, RSA-3072 and
ML-KEM-768) is made; N hybrid wrapped keys are made to its first transport key; the
key is rotated; then `recovery.rotation.rewrap` re-wraps them in batches, as `keys
rewrap` does: RSA-OAEP unwrap and ML-KEM-768 decapsulation with the old keys, a fresh
hybrid wrap to the new ones, and one `key.rewrapped` record per block in the service's
hash-chained log. The instance side (one UPDATE and one audit record per block) is
not in this figure.

    python -m benchmarks.bench_rewrap                 # 10,000 blocks
    python -m benchmarks.bench_rewrap --blocks 100000 --batch 500

Target: >= 500 blocks/s. Where the time goes (profiled): the `key.rewrapped` audit
record, appended one at a time (the log's head row is locked and the record flushed
for each), and the RSA-3072 private-key operation (about 2 ms on a busy core); the
ML-KEM-768 decapsulation and the new wrap add about 0.3 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common

TARGET = 500.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="1,000 blocks")
    args = common.parse_args(parser)
    blocks = 1000 if args.quick else max(100, args.blocks)

    from mailpki.keystore.recovery_block import WRAP_HYBRID
    from mailpki.recovery.rotation import RewrapItem, rewrap, rotate_transport_key
    from mailpki.recovery.service import RecoveryService

    with common.temp_dir("mailpki-bench-rewrap-") as folder:
        common.create_instance(folder / "corp", ca_key_type="p256", database_url=None)
        service = RecoveryService.open(folder / "corp" / "krs")
        try:
            common.log(f"making {blocks:,} hybrid wrapped keys to the first transport key")
            items = []
            for n in range(blocks):
                spki = hashlib.sha256(n.to_bytes(8, "big")).digest()
                payload = os.urandom(32) + spki
                items.append(
                    RewrapItem(
                        f"{n:032X}", spki.hex(), service.transport.wrap(payload, WRAP_HYBRID)
                    )
                )
            rotate_transport_key(service, actor="bench")
            clock = time.perf_counter
            start = clock()
            with common.Progress("rewrap", blocks) as progress:
                for first in range(0, blocks, args.batch):
                    done = rewrap(
                        service, items[first : first + args.batch], wrap=WRAP_HYBRID, actor="bench"
                    )
                    assert done.key_id == service.transport.current.key_id
                    progress.update(min(blocks, first + args.batch))
            elapsed = clock() - start
        finally:
            service.close()
    rate = blocks / elapsed
    print(
        f"rewrap of {blocks:,} hybrid blocks in batches of {args.batch}: {elapsed:.1f} s, "
        f"{rate:,.0f} blocks/s (target >= {TARGET:g})"
    )
    common.emit(
        {
            "benchmark": "bench_rewrap",
            "blocks": blocks,
            "batch": args.batch,
            "machine": common.machine(),
            "seconds": round(elapsed, 2),
            "blocks_per_second": round(rate, 1),
            "targets": [common.target("rewrap", round(rate, 1), "blocks/s", TARGET, ">=")],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
