"""SMIMEA in the DNS: dynamic updates to BIND and validated lookups through unbound.

Starts the same throwaway servers as the tests (tests/fixtures/dns_servers.py): BIND 9
authoritative for a DNSSEC-signed ``example.com`` (``dnssec-policy default``, so every
update is signed by BIND as it is applied) with a TSIG key, and unbound validating it
with the zone's trust anchor. Then, each on the real code path:

  update    ``DnsUpdater.replace`` for N addresses, one RFC 2136 message each (delete
            the SMIMEA set, add one P-256 certificate of ~500 bytes), TSIG-signed, over
            TCP, one at a time as the outbox sends them -> updates/s
  lookup    ``SmimeaLookup.certificates`` for random addresses among those, through
            unbound with the AD bit checked (UDP, truncated -> TCP), cache on -> p50/p95 ms

    python -m benchmarks.bench_dns                 # 500 updates, 500 lookups
    python -m benchmarks.bench_dns --quick         # 100 of each
    python -m benchmarks.bench_dns --count 2000

Target: updates >= 100/s (a 10,000-person `dns sync` in under two minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from benchmarks import _common as common

TARGET_UPDATES_PER_S = 100.0


def certificates(count: int) -> list[tuple[str, x509.Certificate]]:
    """`count` small P-256 certificates for bench-N@example.com (one key, made before timing)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Issuing CA")])
    made = []
    for index in range(count):
        address = f"bench-{index}@example.com"
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), False)
            .sign(key, hashes.SHA256())
        )
        made.append((address, cert))
    return made


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="updates and lookups (500)")
    parser.add_argument("--quick", action="store_true", help="100 of each")
    args = common.parse_args(parser)
    count = 100 if args.quick else max(10, args.count)

    from tests.fixtures.dns_servers import missing_dns_tools, running_bind, running_unbound

    from mailpki.dns.lookup import SmimeaLookup
    from mailpki.dns.settings import DnsSettings, parse_server, read_tsig_key
    from mailpki.dns.smimea import owner_name, record_for
    from mailpki.dns.updater import DnsUpdater

    missing = missing_dns_tools()
    if missing:
        sys.exit(f"bench_dns: {missing}")
    made = certificates(count)
    common.log(f"{count} certificates made; starting BIND and unbound")
    with running_bind() as bind, running_unbound(bind) as resolver:
        settings = DnsSettings(
            server=parse_server(bind.address),
            zone="example.com",
            key=read_tsig_key(bind.key_file),
            ttl=300,
        )
        updater = DnsUpdater(settings)
        started = time.perf_counter()
        for address, cert in made:
            updater.replace(owner_name(address), [record_for(address, cert, ttl=300)])
        update_seconds = time.perf_counter() - started
        updates_per_s = count / update_seconds
        common.log(f"update: {count} in {update_seconds:.2f} s = {updates_per_s:.0f}/s")

        lookup = SmimeaLookup(parse_server(resolver.address))
        rng = random.Random(7)
        samples = []
        for _ in range(count):
            address, cert = made[rng.randrange(count)]
            t0 = time.perf_counter()
            found = lookup.certificates(address)
            samples.append((time.perf_counter() - t0) * 1000)
            assert found == [cert], f"lookup of {address} gave {found}"
        ordered = sorted(samples)
        p50, p95 = statistics.median(ordered), percentile(ordered, 0.95)
        common.log(f"lookup: p50 {p50:.2f} ms, p95 {p95:.2f} ms")

    common.emit(
        {
            "benchmark": "dns",
            "count": count,
            "machine": common.machine(),
            "update_per_s": round(updates_per_s, 1),
            "lookup_p50_ms": round(p50, 2),
            "lookup_p95_ms": round(p95, 2),
            "targets": [
                common.target(
                    "SMIMEA updates to BIND (TSIG, signed zone)",
                    round(updates_per_s, 1),
                    "/s",
                    TARGET_UPDATES_PER_S,
                    ">=",
                )
            ],
        }
    )


if __name__ == "__main__":
    main()
