"""Renewals/s of `mailpki renew --expiring-within` against the machine's raw RSA-2048 key
rate, and the same for `mailpki bulk-enroll`, in one run.

Bulk renewal is an enrollment that supersedes a certificate, so it is read exactly as
bench_bulk_enroll reads bulk enrollment:

  (1) raw: ``os.cpu_count()`` processes doing nothing but RSA-2048 key generation for
      ``--raw-seconds`` (10 s) in all, half before and half after the two runs below;
  (2) bulk-enroll: ``mailpki bulk-enroll`` of ``--people`` (1,000) people, RSA-2048,
      into a fresh SQLite instance (P-256 CA), timed end to end as a process;
  (3) bulk renewal: ``mailpki renew --expiring-within 800 --out-dir DIR`` of the same
      people (every certificate is due), timed end to end as a process: a new key
      each, escrowed, certified, linted, the old one superseded, PKCS#12 written.

    python -m benchmarks.bench_renewal                 # 1,000 people
    python -m benchmarks.bench_renewal --quick         # 200 people, 5 s raw

Target: the same as bulk-enroll, renewal rate >= 0.8 x the raw key rate.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks.bench_bulk_enroll import TARGET_RATIO, bulk_rate, raw_rate


def renew_rate(home: Path, workdir: Path, people: int, workers: int) -> dict[str, Any]:
    out_dir = workdir / "renewed"
    stdout, stderr = workdir / "renew.csv", workdir / "renew.err"
    command = [
        sys.executable, "-m", "mailpki", "renew", "--home", str(home),
        "--expiring-within", "800", "--out-dir", str(out_dir), "--workers", str(workers),
    ]  # fmt: skip
    common.log(f"mailpki renew --expiring-within 800 of {people:,} people, --workers {workers}")
    with stdout.open("wb") as out, stderr.open("wb") as err:
        t0 = time.monotonic()
        proc = subprocess.run(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        seconds = time.monotonic() - t0
    if proc.returncode != 0:
        tail = stderr.read_text(errors="replace")[-2000:]
        raise SystemExit(f"renew failed (exit {proc.returncode}):\n{tail}")
    with stdout.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["serial"] and r["password"]]
    if len(rows) != people or len(list(out_dir.glob("*.p12"))) != people:
        raise SystemExit(f"renew wrote {len(rows)} of {people} PKCS#12 files")
    rate = people / seconds
    common.log(f"  {people} renewed in {seconds:.1f} s: {rate:.1f} renewals/s")
    return {"people": people, "seconds": round(seconds, 2), "renewals_per_s": round(rate, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=None, help="people (default 1000)")
    parser.add_argument("--raw-seconds", type=float, default=None, help="raw key seconds (10)")
    parser.add_argument("--quick", action="store_true", help="200 people, 5 s of raw keys")
    args = common.parse_args(parser)
    people = args.people or (200 if args.quick else 1000)
    seconds = args.raw_seconds or (5.0 if args.quick else 10.0)
    workers = os.cpu_count() or 1

    with common.temp_dir("mailpki-bench-renewal-") as workdir:
        home = workdir / "home"
        common.log(f"new instance in {home} (sqlite, p256 CA)")
        common.create_instance(home, ca_key_type="p256", database_url=None)
        before = raw_rate(workers, seconds / 2)
        enroll = bulk_rate(home, workdir, people, workers)
        renew = renew_rate(home, workdir, people, workers)
        after = raw_rate(workers, seconds / 2)
    raw = round((before["keys_per_s"] + after["keys_per_s"]) / 2, 2)
    enroll_ratio = enroll["enrollments_per_s"] / raw
    renew_ratio = renew["renewals_per_s"] / raw
    print(
        f"{people:,} people, RSA-2048, {workers} workers: raw key generation {raw:.1f} keys/s; "
        f"bulk-enroll {enroll['enrollments_per_s']:.1f}/s (ratio {enroll_ratio:.2f}); "
        f"bulk renewal {renew['renewals_per_s']:.1f}/s (ratio {renew_ratio:.2f}; "
        f"target >= {TARGET_RATIO:g})"
    )
    common.emit(
        {
            "benchmark": "bench_renewal",
            "machine": common.machine(),
            "raw_keys_per_s": raw,
            "raw_before": before["keys_per_s"],
            "raw_after": after["keys_per_s"],
            "enroll": enroll,
            "renew": renew,
            "targets": [
                common.target(
                    f"bulk renewal {people:,} / raw RSA-2048 rate",
                    round(renew_ratio, 3),
                    "x",
                    TARGET_RATIO,
                    ">=",
                ),
                common.target(
                    f"bulk-enroll {people:,} / raw RSA-2048 rate (same run)",
                    round(enroll_ratio, 3),
                    "x",
                    TARGET_RATIO,
                    ">=",
                ),
            ],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
