"""Time and peak memory of build_crl for N revoked entries with a P-256 issuer.

The CRL module alone (no database, no instance); benchmarks/bench_crl_instance.py
measures the same through the instance and its store.

PYTHONPATH=src python benchmarks/bench_crl.py --entries 1000000
python -m benchmarks.bench_crl --quick      # 100,000 entries
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailpki.ca.crl import RevokedEntry, build_crl


def _issuer(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Issuing CA")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=None, help="default 1,000,000")
    parser.add_argument("--quick", action="store_true", help="100,000 entries")
    parser.add_argument("--partition", default=None, help="IDP URI (partitioned CRL)")
    if os.environ.get("MAILPKI_BENCH_LENIENT") == "1":
        args, _ = parser.parse_known_args()  # under scripts/bench: options are shared
    else:
        args = parser.parse_args()
    if args.entries is None:
        args.entries = 100_000 if args.quick else 1_000_000

    key = ec.generate_private_key(ec.SECP256R1())
    issuer = _issuer(key)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    reasons = [None, x509.ReasonFlags.key_compromise, x509.ReasonFlags.superseded]
    # A generator, as rows streamed from the store would be: the CRL code holds
    # only its own RevokedCertificate list, not a second copy of the input.
    entries = (
        RevokedEntry(
            serial=(1 << 120) + i * 7919,  # large serials as real CAs use
            revoked_at=base + dt.timedelta(seconds=i),
            reason=reasons[i % 3],
        )
        for i in range(args.entries)
    )
    rss_inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    crl = build_crl(
        issuer=issuer,
        key=key,
        entries=entries,
        number=1,
        this_update=base,
        next_update=base + dt.timedelta(days=7),
        distribution_point=args.partition,
    )
    t_build = time.perf_counter() - t0
    der = crl.public_bytes(serialization.Encoding.DER)
    t_total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"entries:           {args.entries}")
    print(f"build+sign:        {t_build:.2f} s")
    print(f"build+sign+DER:    {t_total:.2f} s")
    print(f"CRL size:          {len(der) / 1e6:.1f} MB")
    print(f"peak RSS at start: {rss_inputs:.0f} MB")
    print(f"peak RSS:          {peak:.0f} MB")
    n = f"{args.entries:,}"
    result = {
        "benchmark": "bench_crl",
        "entries": args.entries,
        "build_sign_s": round(t_build, 3),
        "build_sign_der_s": round(t_total, 3),
        "crl_mb": round(len(der) / 1e6, 2),
        "rss_at_start_mb": round(rss_inputs, 1),
        "peak_rss_mb": round(peak, 1),
        "targets": [
            {
                "name": f"build_crl only, {n} entries",
                "value": round(t_total, 3),
                "unit": "s",
                "target": 15.0,
                "op": "<=",
                "ok": t_total <= 15.0,
            },
            {
                "name": f"build_crl only peak RSS, {n}",
                "value": round(peak, 1),
                "unit": "MB",
                "target": 500.0,
                "op": "<=",
                "ok": peak <= 500.0,
            },
        ],
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
