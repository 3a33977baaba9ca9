"""CLI start-up: wall time of `mailpki --help` and `mailpki certs list --home H`.

    python -m benchmarks.cli_startup              # median of 9 fresh processes each
    python -m benchmarks.cli_startup --runs 21

Each run is a new process through the installed `mailpki` entry point (or
`python -m mailpki` when there is none), so the figure is what a person waits for:
interpreter start, imports, the command itself. `certs list` runs against a throwaway
instance (SQLite, P-256 CA, no certificates) made once before the runs. Target: ≤ 0.3 s
each ("commands import what they use", cli/main.py). On a shared machine the figures
move with the load: the median of several runs is printed, with the fastest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common

TARGET_SECONDS = 0.3


def entry_point() -> list[str]:
    """The `mailpki` script next to this interpreter, else `python -m mailpki`."""
    script = Path(sys.executable).with_name("mailpki")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("mailpki")
    return [found] if found else [sys.executable, "-m", "mailpki"]


def wall_times(command: list[str], runs: int) -> list[float]:
    """Seconds of each of `runs` fresh processes of `command` (which must succeed)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.decode()[-500:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per command")
    args = common.parse_args(parser)
    mailpki = entry_point()
    result: dict[str, object] = {"benchmark": "cli_startup", "machine": common.machine()}
    targets = []
    with common.temp_dir("mailpki-cli-startup-") as work:
        home = work / "home"
        subprocess.run(
            [*mailpki, "init", "--home", str(home), "--org", common.ORG, "--domain",
             common.DOMAIN, "--ca-key-type", "p256"],
            capture_output=True, check=True,
        )  # fmt: skip
        for label, command in (
            ("help", [*mailpki, "--help"]),
            ("certs_list", [*mailpki, "certs", "list", "--home", str(home)]),
        ):
            wall_times(command, 1)  # warm the file cache and the bytecode
            times = wall_times(command, args.runs)
            median = statistics.median(times)
            common.log(
                f"mailpki {' '.join(command[len(mailpki) :][:2])}: median {median:.3f} s, "
                f"fastest {min(times):.3f} s over {args.runs} runs"
            )
            result[f"{label}_median_s"] = round(median, 4)
            result[f"{label}_fastest_s"] = round(min(times), 4)
            targets.append(
                common.target(f"mailpki {label} start-up", median, "s", TARGET_SECONDS, "<=")
            )
    result["targets"] = targets
    common.emit(result)


if __name__ == "__main__":
    main()
