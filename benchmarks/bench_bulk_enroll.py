"""Enrollments/s of `mailpki bulk-enroll` against the machine's raw RSA-2048 key rate.

Bulk enrollment is bound by RSA key generation, so its figure is read against what
the same machine does in the same run:

  (1) raw: a process pool of ``os.cpu_count()`` workers does nothing but
      ``rsa.generate_private_key(65537, 2048)`` for ``--raw-seconds`` (10 s) in all,
      half before and half after (2), so that both see the same machine -> keys/s;
  (2) bulk: ``mailpki bulk-enroll`` of ``--people`` (2,000) people with RSA-2048 keys
      into a fresh SQLite instance (P-256 CA) with ``--workers os.cpu_count()`` and a
      generated password per PKCS#12, as a separate process timed end to end (start,
      every key generated, escrowed, certified, linted, PKCS#12 written, notices
      sent) -> enrollments/s.

The ratio bulk/raw says how much of the machine's key generation reaches the users.

    python -m benchmarks.bench_bulk_enroll                 # 2,000 people
    python -m benchmarks.bench_bulk_enroll --people 500 --raw-seconds 5
    python -m benchmarks.bench_bulk_enroll --quick         # 300 people, 5 s raw

Target: bulk rate >= 0.8 x the raw key generation rate.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common

TARGET_RATIO = 0.8


def _generate_for(seconds: float) -> tuple[int, float]:
    """RSA-2048 keys generated in about `seconds` (in a pool worker): (count, elapsed)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa.generate_private_key(65537, 2048)  # warm up
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        rsa.generate_private_key(65537, 2048)
        count += 1
    return count, elapsed


def raw_rate(workers: int, seconds: float) -> dict[str, Any]:
    common.log(f"raw RSA-2048 key generation: {workers} processes for {seconds:g} s ...")
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_generate_for, [seconds] * workers))
    keys = sum(count for count, _ in results)
    rate = sum(count / elapsed for count, elapsed in results)
    common.log(f"  {keys} keys, {rate:.1f} keys/s")
    return {"workers": workers, "seconds": seconds, "keys": keys, "keys_per_s": round(rate, 2)}


def write_people(path: Path, people: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "name", "given_name", "surname", "key_type"])
        for i in range(people):
            fields = common.person_fields(i)
            writer.writerow(
                [
                    fields["email"],
                    fields["name"],
                    fields["given_name"],
                    fields["surname"],
                    "rsa2048",
                ]
            )


def bulk_rate(home: Path, workdir: Path, people: int, workers: int) -> dict[str, Any]:
    csv_path, out_dir = workdir / "people.csv", workdir / "p12"
    write_people(csv_path, people)
    stdout, stderr = workdir / "bulk.csv", workdir / "bulk.err"
    command = [
        sys.executable, "-m", "mailpki", "bulk-enroll", "--home", str(home),
        "--input", str(csv_path), "--out", str(out_dir), "--workers", str(workers),
    ]  # fmt: skip
    common.log(f"mailpki bulk-enroll of {people:,} people, --workers {workers} ...")
    with stdout.open("wb") as out, stderr.open("wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        first = last = None  # when the first and the last PKCS#12 were reported (+-0.2 s)
        with common.Progress("bulk-enroll", people) as progress:
            while proc.poll() is None:
                time.sleep(0.2)
                done = max(0, _lines(stdout) - 1)
                progress.update(done)
                if done and first is None:
                    first = time.monotonic() - t0
                if done >= people and last is None:
                    last = time.monotonic() - t0
        seconds = time.monotonic() - t0
    if proc.returncode != 0:
        tail = stderr.read_text(errors="replace")[-2000:]
        raise SystemExit(f"bulk-enroll failed (exit {proc.returncode}):\n{tail}")
    with stdout.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    enrolled = [r for r in rows if r["serial"] and r["password"]]
    if len(enrolled) != people or len(list(out_dir.glob("*.p12"))) != people:
        raise SystemExit(f"bulk-enroll wrote {len(enrolled)} of {people} PKCS#12 files")
    rate = people / seconds
    common.log(f"  {people} enrolled in {seconds:.1f} s: {rate:.1f} enrollments/s")
    return {
        "people": people,
        "workers": workers,
        "seconds": round(seconds, 2),
        "enrollments_per_s": round(rate, 2),
        # Start-up (interpreter, instance, worker pool) and the end (mail to everyone,
        # shutdown): what the end-to-end figure holds besides the enrollments.
        "first_result_after_s": None if first is None else round(first, 1),
        "after_last_result_s": None if last is None else round(seconds - last, 1),
    }


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=None, help="people enrolled (default 2000)")
    parser.add_argument(
        "--raw-seconds", type=float, default=None, help="seconds of raw key generation (10)"
    )
    parser.add_argument("--quick", action="store_true", help="300 people, 5 s of raw keys")
    parser.add_argument("--ca-key-type", choices=("p256", "rsa3072"), default="p256")
    args = common.parse_args(parser)
    people = args.people or (300 if args.quick else 2000)
    seconds = args.raw_seconds or (5.0 if args.quick else 10.0)
    workers = os.cpu_count() or 1

    with common.temp_dir("mailpki-bench-bulk-") as workdir:
        home = workdir / "home"
        common.log(f"new instance in {home} (sqlite, {args.ca_key_type} CA)")
        common.create_instance(home, ca_key_type=args.ca_key_type, database_url=None)
        before = raw_rate(workers, seconds / 2)
        bulk = bulk_rate(home, workdir, people, workers)
        after = raw_rate(workers, seconds / 2)
    raw = {
        "workers": workers,
        "seconds": seconds,
        "keys": before["keys"] + after["keys"],
        "keys_per_s": round((before["keys_per_s"] + after["keys_per_s"]) / 2, 2),
        "before_keys_per_s": before["keys_per_s"],
        "after_keys_per_s": after["keys_per_s"],
    }

    ratio = bulk["enrollments_per_s"] / raw["keys_per_s"]
    print(
        f"bulk-enroll of {people:,} (RSA-2048, {workers} workers): "
        f"{bulk['enrollments_per_s']:.1f} enrollments/s; raw key generation "
        f"{raw['keys_per_s']:.1f} keys/s; ratio {ratio:.2f} (target >= {TARGET_RATIO:g})"
    )
    common.emit(
        {
            "benchmark": "bench_bulk_enroll",
            "ca_key_type": args.ca_key_type,
            "machine": common.machine(),
            "raw": raw,
            "bulk": bulk,
            "ratio": round(ratio, 3),
            "targets": [
                common.target(
                    f"bulk-enroll {people:,} / raw RSA-2048 rate",
                    round(ratio, 3),
                    "x",
                    TARGET_RATIO,
                    ">=",
                ),
                {
                    "name": f"bulk-enroll {people:,} RSA-2048 (info)",
                    "value": bulk["enrollments_per_s"],
                    "unit": "enrollments/s",
                    "target": None,
                    "op": "",
                    "ok": None,
                },
                {
                    "name": f"raw RSA-2048 keygen, {workers} processes (info)",
                    "value": raw["keys_per_s"],
                    "unit": "keys/s",
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
