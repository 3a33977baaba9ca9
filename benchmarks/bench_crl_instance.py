"""CRLs at scale through the instance: full CRL, one partition, one revocation.

A throwaway instance (P-256 CA by default) gets N revoked certificate rows bulk
inserted straight into its database (SQLAlchemy Core executemany, not timed), plus
real certificates issued normally. Then, each in a fresh process so that the bulk
insert's memory does not count:

  (a) the full CRL, ``instance.ca.generate_issuing_crl(None)``: seconds and peak RSS
  (b) one partition (partition 0, holding ``--partition-size`` revoked entries)
  (c) one revocation, ``instance.ca.revoke(serial, keyCompromise)`` of a valid
      certificate at that table size: median of ``--revocations``

    python -m benchmarks.bench_crl_instance                 # 1,000,000 entries
    python -m benchmarks.bench_crl_instance --quick         # 100,000 entries
    python -m benchmarks.bench_crl_instance --postgres

Targets: full CRL <= 15 s and <= 500 MB; one partition <= 2 s; a revocation <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common

TARGET_FULL_S = 15.0
TARGET_FULL_MB = 500.0
TARGET_PARTITION_S = 2.0
TARGET_REVOKE_MS = 50.0
CHUNK = 20_000
REASONS = ("key_compromise", "superseded", "cessation_of_operation", "affiliation_changed", None)
SERIAL_BASE = 1 << 126  # 127-bit serials like the real ones; +i*STEP keeps them unique
SERIAL_STEP = 0x9E3779B97F4A7C15


def bulk_insert(home: Path, entries: int, partition_size: int) -> float:
    """Insert `entries` revoked certificates (and their serial reservations); seconds."""
    from sqlalchemy import insert, text

    from mailpki.instance.instance import Instance
    from mailpki.store.models import CertificateRecord, SerialReservation

    instance = Instance.open(home)
    engine = instance.db.engine
    serials_t = SerialReservation.__table__
    certs_t = CertificateRecord.__table__
    base = datetime(2025, 1, 1, tzinfo=UTC)
    not_after = base + timedelta(days=730)
    der = bytes.fromhex("3003020100")  # a placeholder; CRLs read serial, time and reason only
    t0 = time.perf_counter()
    with common.Progress(f"bulk insert {entries:,} revoked rows", entries) as progress:
        for start in range(0, entries, CHUNK):
            stop = min(start + CHUNK, entries)
            serial_rows = []
            cert_rows = []
            for i in range(start, stop):
                serial = format(SERIAL_BASE + i * SERIAL_STEP, "X")
                moment = base + timedelta(seconds=i)
                serial_rows.append({"serial": serial, "issuer": "issuing", "reserved_at": moment})
                cert_rows.append(
                    {
                        "serial": serial,
                        "issuer": "issuing",
                        "subject": f"CN=bulk{i}@{common.DOMAIN}",
                        "email": f"bulk{i}@{common.DOMAIN}",
                        "profile": "sponsored-multipurpose",
                        "not_before": moment,
                        "not_after": not_after,
                        "fingerprint": format(i, "064x"),
                        "der": der,
                        "status": "revoked",
                        "revoked_at": moment + timedelta(days=1),
                        "revocation_reason": REASONS[i % len(REASONS)],
                        "crl_partition": i // partition_size,
                        "created_at": moment,
                    }
                )
            with engine.begin() as connection:
                connection.execute(insert(serials_t), serial_rows)
                connection.execute(insert(certs_t), cert_rows)
            progress.update(stop)
    if not instance.db.is_sqlite:
        # What autovacuum would soon do after such a load.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    instance.close()
    return time.perf_counter() - t0


def issue_valid(home: Path, count: int) -> list[int]:
    """Certificates issued the normal way (to be revoked in the timed phase)."""
    from mailpki.instance.instance import Instance

    instance = Instance.open(home)
    serials = []
    with common.Progress(f"issue {count} valid certificates", count) as progress:
        for i in range(count):
            issued = instance.ca.issue_from_csr(common.make_csr(i), common.person(i), actor="bench")
            serials.append(int(issued.serial, 16))
            progress.update(i + 1)
    instance.close()
    return serials


# -- children: one measurement each, in a fresh process ----------------------------------------


def child(args: argparse.Namespace) -> dict[str, Any]:
    from cryptography import x509

    from mailpki.instance.instance import Instance

    home = Path(args.home)
    instance = Instance.open(home)
    ca = instance.ca
    _ = ca.issuing_key, ca.hierarchy, ca.audit  # key loading is not what is measured
    rss_before = common.peak_rss_mb()
    out: dict[str, Any] = {"rss_before_mb": round(rss_before, 1)}
    if args.child == "full":
        t0 = time.perf_counter()
        info = ca.generate_issuing_crl(None, actor="bench")
        out["seconds"] = round(time.perf_counter() - t0, 3)
        out["entries"] = info.entries
        out["crl_mb"] = round(len(info.der) / 1e6, 2)
        out["peak_rss_mb"] = round(common.peak_rss_mb(), 1)
    elif args.child == "partition":
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            info = ca.generate_issuing_crl(args.partition, actor="bench")
            times.append(time.perf_counter() - t0)
        out["seconds_first"] = round(times[0], 3)
        out["seconds_median"] = round(statistics.median(times), 3)
        out["entries"] = info.entries
        out["crl_mb"] = round(len(info.der) / 1e6, 2)
        out["peak_rss_mb"] = round(common.peak_rss_mb(), 1)
    elif args.child == "revoke":
        serials = [int(s, 16) for s in args.serials.split(",")]
        ca.revoke(serials[0], x509.ReasonFlags.key_compromise, actor="bench")  # warm-up
        times = []
        for serial in serials[1:]:
            t0 = time.perf_counter()
            ca.revoke(serial, x509.ReasonFlags.key_compromise, actor="bench")
            times.append((time.perf_counter() - t0) * 1000)
        out["ms_median"] = round(statistics.median(times), 2)
        out["ms_max"] = round(max(times), 2)
        out["ms_min"] = round(min(times), 2)
        out["count"] = len(times)
    instance.close()
    return out


def run_child(home: Path, kind: str, *extra: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_crl_instance",
        "--child",
        kind,
        "--home",
        str(home),
        *extra,
    ]
    root = Path(__file__).resolve().parent.parent
    common.log(f"  {kind}: fresh process ...")
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the {kind} child failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    common.log(f"  {kind}: {result}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=None, help="revoked rows (default 1M)")
    parser.add_argument("--quick", action="store_true", help="100,000 entries")
    parser.add_argument("--partition-size", type=int, default=100_000)
    parser.add_argument("--revocations", type=int, default=20, help="timed revocations")
    parser.add_argument("--ca-key-type", choices=("p256", "rsa3072"), default="p256")
    parser.add_argument("--keep", action="store_true", help="keep the temp instance (prints it)")
    common.add_database_options(parser)
    parser.add_argument("--child", choices=("full", "partition", "revoke"), help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--partition", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--serials", help=argparse.SUPPRESS)
    args = common.parse_args(parser)
    if args.child:
        common.emit(child(args))
        return 0
    if args.entries is None:
        args.entries = 100_000 if args.quick else 1_000_000

    with (
        common.temp_dir("mailpki-bench-crl-") as workdir,
        common.database_for(args, workdir) as url,
    ):
        home = workdir / "home"
        common.log(f"new instance in {home} ({common.database_kind(url)}, {args.ca_key_type} CA)")
        common.create_instance(home, ca_key_type=args.ca_key_type, database_url=url)
        if args.partition_size != 100_000:
            from mailpki.instance.instance import Instance

            inst = Instance.open(home)
            inst.set_config("crl.partition_size", str(args.partition_size), actor="bench")
            inst.close()
        insert_s = bulk_insert(home, args.entries, args.partition_size)
        common.log(f"bulk insert: {insert_s:.1f} s ({args.entries / insert_s:,.0f} rows/s)")
        valid = issue_valid(home, args.revocations + 1)

        full = run_child(home, "full")
        part = run_child(home, "partition", "--partition", "0")
        revoke = run_child(home, "revoke", "--serials", ",".join(format(s, "X") for s in valid))
        if args.keep:
            import shutil

            kept = Path(f"/tmp/mailpki-bench-crl-kept-{int(time.time())}")
            shutil.copytree(home, kept)
            common.log(f"kept a copy of the instance in {kept}")

    db = common.database_kind(url)
    n = f"{args.entries:,}"
    common.emit(
        {
            "benchmark": "bench_crl_instance",
            "entries": args.entries,
            "partition_size": args.partition_size,
            "ca_key_type": args.ca_key_type,
            "database": db,
            "machine": common.machine(),
            "bulk_insert_s": round(insert_s, 1),
            "full_crl": full,
            "partition_crl": part,
            "revoke": revoke,
            "targets": [
                common.target(
                    f"full CRL, {n} entries ({db})", full["seconds"], "s", TARGET_FULL_S, "<="
                ),
                common.target(
                    f"full CRL peak RSS, {n} entries",
                    full["peak_rss_mb"],
                    "MB",
                    TARGET_FULL_MB,
                    "<=",
                ),
                common.target(
                    f"partition CRL, {part['entries']:,} entries ({db})",
                    part["seconds_median"],
                    "s",
                    TARGET_PARTITION_S,
                    "<=",
                ),
                common.target(
                    f"revoke at {n} rows, median of {revoke['count']} ({db})",
                    revoke["ms_median"],
                    "ms",
                    TARGET_REVOKE_MS,
                    "<=",
                ),
            ],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
