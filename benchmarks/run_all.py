"""Run every benchmark and print a summary table of figure vs target.

    python -m benchmarks.run_all [--only issue,ocsp] [--quick] [options for the benchmarks]

Options other than --only go to every benchmark; each ignores those it does not know.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCHMARKS = (
    "bench_issue",
    "bench_crl_instance",
    "bench_ocsp",
    "bench_crl",
    "bench_escrow",
    "bench_bulk_enroll",
    "bench_renewal",
    "bench_lifecycle",
    "bench_recovery",
    "bench_directory",
    "bench_portal",
    "bench_negotiate",
    "bench_smime",
    "bench_dns",
)
ROOT = Path(__file__).resolve().parent.parent


def run(name: str, args: list[str]) -> dict[str, Any] | None:
    print(f"\n=== {name} {' '.join(args)}", file=sys.stderr, flush=True)
    env = {**os.environ, "MAILPKI_BENCH_LENIENT": "1"}
    t0 = time.monotonic()
    # stderr (progress) goes straight to the terminal; stdout is kept for the JSON line.
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line, file=sys.stderr)
    if proc.returncode != 0 or not lines:
        print(f"{name} FAILED (exit {proc.returncode})", file=sys.stderr)
        return None
    print(lines[-1], file=sys.stderr)
    result: dict[str, Any] = json.loads(lines[-1])
    result["_seconds"] = time.monotonic() - t0
    return result


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def main() -> int:
    argv = sys.argv[1:]
    only = set(BENCHMARKS)
    if "--only" in argv:
        i = argv.index("--only")
        only = {n if n.startswith("bench_") else f"bench_{n}" for n in argv[i + 1].split(",")}
        del argv[i : i + 2]
    rows: list[tuple[str, str, str, str, str]] = []
    failed = []
    for name in BENCHMARKS:
        if name not in only:
            continue
        result = run(name, argv)
        if result is None:
            failed.append(name)
            rows.append((name, "FAILED", "", "", ""))
            continue
        for t in result.get("targets", []):
            verdict = "ok" if t["ok"] else ("MISS" if t["ok"] is False else "?")
            rows.append(
                (
                    name,
                    t["name"],
                    f"{fmt(t['value'])} {t['unit']}",
                    f"{t['op']} {fmt(t['target'])} {t['unit']}",
                    verdict,
                )
            )
    headers = ("benchmark", "figure", "measured", "target", "")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(5)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"\n{os.cpu_count()} CPUs; the load generators and the code under test share them.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
