"""An instance at scale: issuance at 0 and at N stored, lookups, OCSP, CRLs, storage.

    python -m benchmarks.bench_scale --postgres                    # 1,000,000 certificates
    python -m benchmarks.bench_scale --postgres --count 100000     # quicker
    python -m benchmarks.bench_scale --database postgresql+psycopg://…/empty_db

A throwaway instance (P-256 CA) is measured empty, then filled by benchmarks.load_scale
(COPY; real certificates, escrow and audit records; a tenth revoked) and measured again:

- issuance, every certificate linted, in one process: rate at 0 and at N (target: within
  10 % of each other);
- lookup by mail, as the certificate directory does it and as `certs list --email` does it:
  p99 (target ≤ 5 ms);
- OCSP responses per second in process, for random stored serials, with a nonce (signed
  each time) and without;
- the full CRL and one partition (with N/10 revoked);
- storage per certificate with its escrow and audit records (PostgreSQL:
  pg_total_relation_size of every table over N; target ≤ 4 KB).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks import load_scale

TARGET_ISSUE_DRIFT = 0.10
TARGET_LOOKUP_P99_MS = 5.0
TARGET_BYTES_PER_CERT = 4096


def issue_rate(home: Path, count: int) -> float:
    """Certificates per second through CertificateAuthority.issue_for_key (linted)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from mailpki.instance.instance import Instance
    from mailpki.policy.person import Person

    instance = Instance.open(home)
    try:
        keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(count)]
        people = [
            Person.from_untrusted(email=f"issue{i}-{random.getrandbits(32)}@{load_scale.MAIL_DOMAIN}",
                                  name="Issue Bench")
            for i in range(count)
        ]  # fmt: skip
        instance.ca.issue_for_key(keys[0], people[0], profile="mailbox-strict", actor="bench")
        started = time.perf_counter()
        for key, person in zip(keys[1:], people[1:], strict=True):
            instance.ca.issue_for_key(key, person, profile="mailbox-strict", actor="bench")
        return (count - 1) / (time.perf_counter() - started)
    finally:
        instance.close()


def lookups(home: Path, total: int, samples: int) -> dict[str, float]:
    from mailpki.instance.instance import Instance

    instance = Instance.open(home)
    try:
        mails = [
            f"user{random.randrange(total):08d}@{load_scale.MAIL_DOMAIN}" for _ in range(samples)
        ]
        found: dict[str, float] = {}
        for name, lookup in (
            ("certdir", lambda m: instance.ca.valid_certificates(m)),
            ("certs_list", lambda m: instance.ca.list_certificates(email=m, limit=50)),
        ):
            times = []
            for mail in mails:
                started = time.perf_counter()
                lookup(mail)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            found[f"{name}_p50_ms"] = round(statistics.median(times), 3)
            found[f"{name}_p99_ms"] = round(times[int(len(times) * 0.99) - 1], 3)
        return found
    finally:
        instance.close()


def ocsp_rate(home: Path, seconds: float) -> dict[str, float]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import OCSPNonce, load_der_x509_certificate, ocsp

    from mailpki.instance.instance import Instance

    instance = Instance.open(home)
    try:
        page, _ = instance.ca.list_certificates(limit=2000)
        issuer = instance.hierarchy.issuing
        requests: dict[str, list[bytes]] = {"nonce": [], "cached": []}
        for info in page:
            cert = load_der_x509_certificate(instance.ca.certificate_der(int(info.serial, 16)))
            plain = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
            requests["cached"].append(plain.build().public_bytes(_der()))
            with_nonce = plain.add_extension(OCSPNonce(random.randbytes(16)), critical=False)
            requests["nonce"].append(with_nonce.build().public_bytes(_der()))
        responder = instance.ca.responder()
        rates = {}
        for kind, batch in requests.items():
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                for request in batch[:200]:
                    responder.respond(request)
                done += min(len(batch), 200)
            rates[f"ocsp_{kind}_per_s"] = round(done / (time.perf_counter() - started))
        return rates
    finally:
        instance.close()


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def crls(home: Path) -> dict[str, float]:
    from mailpki.instance.instance import Instance

    instance = Instance.open(home)
    try:
        started = time.perf_counter()
        full = instance.ca.generate_issuing_crl(None, actor="bench")
        full_s = time.perf_counter() - started
        started = time.perf_counter()
        part = instance.ca.generate_issuing_crl(0, actor="bench")
        part_s = time.perf_counter() - started
        return {
            "crl_full_s": round(full_s, 2),
            "crl_full_entries": full.entries,
            "crl_partition_s": round(part_s, 3),
            "crl_partition_entries": part.entries,
        }
    finally:
        instance.close()


def storage(home: Path, count: int) -> dict[str, float]:
    from mailpki.instance.instance import Instance

    instance = Instance.open(home)
    try:
        url = instance.config.database_url
        if not url.startswith("postgresql"):
            size = Path(url.removeprefix("sqlite:///")).stat().st_size
            return {"bytes_per_certificate": round(size / count)}
        from sqlalchemy import text

        with instance.db.session() as session:
            total = session.execute(
                text(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'r'"
                )
            ).scalar_one()
        return {"bytes_per_certificate": round(int(total) / count)}
    finally:
        instance.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_database_options(parser)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--issue", type=int, default=300, help="certificates per issuance run")
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    args = common.parse_args(parser)
    with (
        common.temp_dir("mailpki-scale-") as work,
        common.throwaway_postgres(work) if args.postgres else _given(args.database) as url,
    ):
        home = work / "instance"
        common.create_instance(home, ca_key_type="p256", database_url=url)
        common.log(f"issuance at 0 stored ({args.issue} certificates)")
        empty_rate = issue_rate(home, args.issue)
        loaded = load_scale.load(home, args.count, args.count // 10, args.workers, 5_000)
        common.log(f"loaded {args.count:,} in {loaded['seconds']} s")
        full_rate = issue_rate(home, args.issue)
        result: dict[str, Any] = {
            "benchmark": "scale",
            "count": args.count,
            "database": "postgresql" if url and url.startswith("postgresql") else "sqlite",
            "load_s": loaded["seconds"],
            "issue_per_s_at_0": round(empty_rate, 1),
            "issue_per_s_at_n": round(full_rate, 1),
        }
        result.update(lookups(home, args.count, 2000))
        result.update(ocsp_rate(home, 3.0))
        result.update(crls(home))
        result.update(storage(home, args.count))
    drift = abs(full_rate - empty_rate) / empty_rate
    result["targets"] = [
        common.target("issuance drift 0 -> N", round(drift, 3), "ratio", TARGET_ISSUE_DRIFT, "<="),
        common.target("certdir lookup p99", result["certdir_p99_ms"], "ms", TARGET_LOOKUP_P99_MS, "<="),
        common.target("certs list --email p99", result["certs_list_p99_ms"], "ms", TARGET_LOOKUP_P99_MS, "<="),
        common.target("storage per certificate", result["bytes_per_certificate"], "bytes", TARGET_BYTES_PER_CERT, "<="),
    ]  # fmt: skip
    for key, value in result.items():
        if key != "targets":
            common.log(f"{key}: {value}")
    print(json.dumps(result))


class _given:
    """A database the caller made (or None: SQLite in the temp folder)."""

    def __init__(self, url: str | None) -> None:
        self.url = url

    def __enter__(self) -> str | None:
        return self.url

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
