"""CRLs at scale through the instance, against `openssl ca -gencrl` in the same run.

A throwaway instance (P-256 CA by default) gets N revoked certificate rows bulk
inserted straight into its database (SQLAlchemy Core executemany, not timed), each
with its CRL entry DER encoded as ``revoke`` stores it, plus real certificates issued
normally. Then, each in a fresh process so that the bulk insert's memory does not count:

  (a) the full CRL, ``instance.ca.generate_issuing_crl(None)``: seconds and peak RSS
  (b) one partition (partition 0, holding ``--partition-size`` revoked entries)
  (c) one revocation, ``instance.ca.revoke(serial, keyCompromise)`` of a valid
      certificate at that table size: median of ``--revocations``
  (d) the anchor: ``openssl ca -gencrl`` with the same issuing certificate and key on an
      index.txt listing the same N revoked entries (serial, date, reason): seconds and
      the peak RSS of that process (wait4's rusage)

    python -m benchmarks.bench_crl_instance                 # 1,000,000 entries
    python -m benchmarks.bench_crl_instance --quick         # 100,000 entries
    python -m benchmarks.bench_crl_instance --postgres

Targets: full CRL time and peak memory each <= 1.0 x openssl's; one partition of
100,000 <= 0.5 s; a revocation <= 50 ms.
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

TARGET_FULL_RATIO = 1.0  # time and peak memory, ours / openssl ca -gencrl
TARGET_PARTITION_S = 0.5
TARGET_REVOKE_MS = 50.0
CHUNK = 20_000
REASONS = ("key_compromise", "superseded", "cessation_of_operation", "affiliation_changed", None)
SERIAL_BASE = 1 << 126  # 127-bit serials like the real ones; +i*STEP keeps them unique
SERIAL_STEP = 0x9E3779B97F4A7C15


def bulk_insert(home: Path, entries: int, partition_size: int) -> float:
    """Insert `entries` revoked certificates (and their serial reservations); seconds."""
    from cryptography import x509
    from sqlalchemy import insert, text

    from mailpki.ca.crl import encode_entry
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
                number = SERIAL_BASE + i * SERIAL_STEP
                serial = format(number, "X")
                moment = base + timedelta(seconds=i)
                reason = REASONS[i % len(REASONS)]
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
                        "revocation_reason": reason,
                        "crl_partition": i // partition_size,
                        "created_at": moment,
                        "crl_entry_der": encode_entry(
                            number,
                            moment + timedelta(days=1),
                            x509.ReasonFlags[reason] if reason else None,
                        ),
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


# -- the anchor: openssl ca -gencrl on the same entries ----------------------------------------

OPENSSL_REASONS = {
    "key_compromise": "keyCompromise",
    "superseded": "superseded",
    "cessation_of_operation": "cessationOfOperation",
    "affiliation_changed": "affiliationChanged",
}


def _asn1_time(moment: datetime) -> str:
    return moment.strftime("%y%m%d%H%M%SZ")


def openssl_anchor(home: Path, workdir: Path, entries: int) -> dict[str, Any]:
    """`openssl ca -gencrl` with the instance's issuing CA over an index of the same
    entries; seconds and peak RSS of the openssl process."""
    from cryptography.hazmat.primitives import serialization

    from mailpki.instance.instance import Instance

    folder = workdir / "openssl-ca"
    folder.mkdir()
    instance = Instance.open(home)
    key = instance.ca.issuing_key
    (folder / "issuing.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "issuing.key").chmod(0o600)
    (folder / "issuing.pem").write_bytes(
        instance.hierarchy.issuing.public_bytes(serialization.Encoding.PEM)
    )
    instance.close()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    expiry = _asn1_time(base + timedelta(days=730))
    with (
        (folder / "index.txt").open("w") as index,
        common.Progress(f"write openssl index of {entries:,}", entries) as progress,
    ):
        for i in range(entries):
            serial = format(SERIAL_BASE + i * SERIAL_STEP, "X")
            serial = serial if len(serial) % 2 == 0 else "0" + serial
            revoked = _asn1_time(base + timedelta(seconds=i) + timedelta(days=1))
            reason = REASONS[i % len(REASONS)]
            if reason:
                revoked += "," + OPENSSL_REASONS[reason]
            index.write(f"R\t{expiry}\t{revoked}\t{serial}\tunknown\t/CN=bulk{i}\n")
            if i % 50_000 == 0:
                progress.update(i)
        progress.update(entries)
    (folder / "index.txt.attr").write_text("unique_subject = no\n")
    (folder / "crlnumber").write_text("01\n")
    (folder / "openssl.cnf").write_text(
        "[ca]\ndefault_ca = CA_default\n"
        "[CA_default]\n"
        f"dir = {folder}\n"
        "database = $dir/index.txt\ncrlnumber = $dir/crlnumber\n"
        "certificate = $dir/issuing.pem\nprivate_key = $dir/issuing.key\n"
        "default_md = sha256\ndefault_crl_hours = 168\ncrl_extensions = crl_ext\n"
        "[crl_ext]\nauthorityKeyIdentifier = keyid:always\n"
    )
    cmd = ["openssl", "ca", "-gencrl", "-config", str(folder / "openssl.cnf")]
    cmd += ["-out", str(folder / "full.crl"), "-batch"]
    common.log("  openssl ca -gencrl: ...")
    seconds, peak = common.measure_command(cmd)
    size = (folder / "full.crl").stat().st_size
    result = {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak, 1),
        "crl_mb": round(size / 1e6, 2),
    }
    common.log(f"  openssl: {result}")
    return result


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

        anchor = openssl_anchor(home, workdir, args.entries)
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
            "openssl_gencrl": anchor,
            "time_ratio": round(full["seconds"] / anchor["seconds"], 2),
            "memory_ratio": round(full["peak_rss_mb"] / anchor["peak_rss_mb"], 2),
            "partition_crl": part,
            "revoke": revoke,
            "targets": [
                common.target(
                    f"full CRL time, {n} entries ({db}) / openssl ca -gencrl "
                    f"({full['seconds']} s / {anchor['seconds']} s)",
                    round(full["seconds"] / anchor["seconds"], 2),
                    "x",
                    TARGET_FULL_RATIO,
                    "<=",
                ),
                common.target(
                    f"full CRL peak RSS, {n} entries / openssl ca -gencrl "
                    f"({full['peak_rss_mb']} MB / {anchor['peak_rss_mb']} MB)",
                    round(full["peak_rss_mb"] / anchor["peak_rss_mb"], 2),
                    "x",
                    TARGET_FULL_RATIO,
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
