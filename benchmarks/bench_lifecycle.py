"""Seconds of one lifecycle run over 100,000 certificates, 5,000 of them expiring soon.

Setup (not timed): a fresh instance (P-256 CA), 100,000 people in the embedded
directory (``directory import``), one real certificate issued and linted by the CA,
then 100,000 certificate rows stored with that certificate's DER and their own serial,
mail and dates (signing 100,000 certificates would only time the CA, which
bench_issue measures; the lifecycle reads serial, mail, profile and dates). 5,000 of
them expire within the next 30 days (spread over days 1-29), the rest in 60-700 days;
``--disabled`` people (20) are disabled in the directory.

Timed: ``lifecycle.run`` in process with the mail left in the outbox (no mail transport
time), twice:

  (1) first run: 5,000 expiry notices, each with its one-time renewal link, queued; the
      officers' summary; the leaver check of 100,000 holders (embedded directory, in
      batches) that marks everyone seen; the disabled people's certificates revoked;
  (2) second run (the steady state of an hourly run): nothing to notice, the leaver
      check again.

    python -m benchmarks.bench_lifecycle                    # 100,000 certificates
    python -m benchmarks.bench_lifecycle --certificates 20000 --expiring 1000
    python -m benchmarks.bench_lifecycle --postgres         # a throwaway PostgreSQL

Target: the first run <= 10 s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common

TARGET_SECONDS = 10.0
CHUNK = 5000


def populate(home: Path, certificates: int, expiring: int, disabled: int) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from sqlalchemy import insert

    from mailpki.directory.people_import import import_people
    from mailpki.instance.instance import Instance
    from mailpki.store.models import CertificateRecord, SerialReservation

    instance = Instance.open(home)
    try:
        instance.set_config("keymanager.pool_size", "0", actor="bench")
        instance.set_config("lifecycle.officers", f"officers@{common.DOMAIN}", actor="bench")
        lines = ["login,mail,name,enabled"]
        for i in range(certificates):
            lines.append(f"user{i},user{i}@{common.DOMAIN},Bench User{i},"
                         f"{'false' if i < disabled else 'true'}")  # fmt: skip
        t0 = time.monotonic()
        report = import_people(instance.db, ("\n".join(lines) + "\n").encode(), kind="csv")
        assert report.added == certificates, report.errors[:3]
        common.log(f"  {certificates:,} people imported in {time.monotonic() - t0:.1f} s")
        template = instance.ca.issue_for_key(
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            common.person(certificates + 1),
            actor="bench",
        )
        der = template.certificate.public_bytes(Encoding.DER)
        now = datetime.now(UTC)
        t0 = time.monotonic()
        for start in range(0, certificates, CHUNK):
            reservations, records = [], []
            for i in range(start, min(start + CHUNK, certificates)):
                serial = f"{(1 << 100) + i:X}"
                if i < expiring:
                    not_after = now + timedelta(days=1 + i % 29, hours=1)
                else:
                    not_after = now + timedelta(days=60 + i % 640)
                reservations.append({"serial": serial, "issuer": "issuing", "reserved_at": now})
                records.append(
                    {
                        "serial": serial, "issuer": "issuing",
                        "subject": f"CN=Bench User{i}", "email": f"user{i}@{common.DOMAIN}",
                        "profile": template.profile, "not_before": now - timedelta(days=1),
                        "not_after": not_after,
                        "fingerprint": hashlib.sha256(f"bench {i}".encode()).hexdigest(),
                        "der": der, "status": "valid", "crl_partition": 0, "created_at": now,
                    }
                )  # fmt: skip
            with instance.db.transaction() as session:
                session.execute(insert(SerialReservation), reservations)
                session.execute(insert(CertificateRecord), records)
        common.log(f"  {certificates:,} certificate rows stored in {time.monotonic() - t0:.1f} s")
    finally:
        instance.close()


def timed_run(home: Path) -> tuple[float, Any]:
    from mailpki.instance.instance import Instance
    from mailpki.instance.lifecycle import run

    instance = Instance.open(home)
    try:
        _ = instance.audit, instance.ca  # open the keys before the clock starts
        t0 = time.perf_counter()
        if os.environ.get("BENCH_PROFILE"):
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            report = profiler.runcall(run, instance, actor="bench", send_mail=False)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats(
                os.environ["BENCH_PROFILE"]
            ).print_stats(25)
        else:
            report = run(instance, actor="bench", send_mail=False)
        return time.perf_counter() - t0, report
    finally:
        instance.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certificates", type=int, default=100_000)
    parser.add_argument("--expiring", type=int, default=5_000)
    parser.add_argument("--disabled", type=int, default=20)
    common.add_database_options(parser)
    args = common.parse_args(parser)

    with (
        common.temp_dir("mailpki-bench-lifecycle-") as workdir,
        common.database_for(args, workdir) as database_url,
    ):
        home = workdir / "home"
        common.log(f"new instance in {home} ({common.database_kind(database_url)}, p256 CA)")
        common.create_instance(home, ca_key_type="p256", database_url=database_url)
        populate(home, args.certificates, args.expiring, args.disabled)
        common.log("lifecycle run (first) ...")
        first, report = timed_run(home)
        common.log(f"  {report.summary()} in {first:.2f} s")
        assert not report.errors, report.errors
        assert len(report.notices.notices) == args.expiring, len(report.notices.notices)
        assert len(report.leavers.revoked) == args.disabled, report.leavers
        common.log("lifecycle run (second) ...")
        second, again = timed_run(home)
        common.log(f"  {again.summary()} in {second:.2f} s")

    print(
        f"lifecycle run over {args.certificates:,} certificates "
        f"({args.expiring:,} expiring, {args.disabled} leavers): first {first:.2f} s, "
        f"second {second:.2f} s (target first <= {TARGET_SECONDS:g} s)"
    )
    common.emit(
        {
            "benchmark": "bench_lifecycle",
            "database": common.database_kind(database_url),
            "machine": common.machine(),
            "certificates": args.certificates,
            "expiring": args.expiring,
            "first_run_s": round(first, 2),
            "second_run_s": round(second, 2),
            "targets": [
                common.target(
                    f"lifecycle run, {args.certificates:,} certificates, {args.expiring:,} notices",
                    round(first, 2),
                    "s",
                    TARGET_SECONDS,
                    "<=",
                ),
                {
                    "name": "lifecycle run, steady state (info)",
                    "value": round(second, 2),
                    "unit": "s",
                    "target": None,
                    "op": "",
                    "ok": None,
                },
            ],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
