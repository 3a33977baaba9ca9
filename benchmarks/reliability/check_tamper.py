"""Tampering with the audit log on SQLite and PostgreSQL: every kind must be detected.

For each database: one instance with a sealed log handed to its witnesses (the embedded
recovery service and a witness file outside the home folder); then, for every kind and
``--trials`` positions near the end of the log, the pristine database is restored, the
database's own client tampers with it, and `mailpki audit verify` must fail. The
pristine log must verify (a checker that always fails would detect everything).

    python -m benchmarks.reliability.check_tamper [--trials 3] [--only sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks._common import throwaway_postgres
from benchmarks.reliability.tampering import (
    KINDS,
    PostgresTarget,
    SqliteTarget,
    Target,
    detected,
    mailpki,
    make_history,
    tamper,
)


def _run(target: Target, home: Path, work: Path, database_url: str | None, trials: int) -> bool:
    older = make_history(home, target, work, database_url=database_url)
    witness = work / "witness.log"
    result = mailpki("config", "set", "audit.witness_file", str(witness), "--home", home)
    if result.returncode != 0 or mailpki("audit", "seal", "--home", home).returncode != 0:
        raise RuntimeError("could not hand the checkpoints to the witness file")
    pristine = work / "pristine"
    target.save(pristine)
    if detected(home):
        print(f"{target.name} pristine log: verify FAILED on an untouched log", flush=True)
        return False
    all_ok = True
    for kind in KINDS:
        tried = caught = 0
        for k in range(1, trials + 1):
            target.restore(pristine)
            tamper(target, kind, k, older)
            tried += 1
            caught += detected(home)
        target.restore(pristine)
        print(f"{target.name} {kind}: {tried} tried, {caught} detected", flush=True)
        all_ok &= caught == tried
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2, help="positions per kind (default 2)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args(argv if argv is not None else [])
    for tool in ("sqlite3", "psql", "pg_dump"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (apt-get install sqlite3 postgresql-client)", file=sys.stderr)
            return 1
    ok = True
    with tempfile.TemporaryDirectory(prefix="tamper-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # the PostgreSQL server runs as its own user and must reach its dir
        if args.only in (None, "sqlite"):
            (work / "sqlite").mkdir()
            home = work / "sqlite" / "corp"
            ok &= _run(SqliteTarget(home / "mailpki.db"), home, work / "sqlite", None, args.trials)
        if args.only in (None, "postgresql"):
            (work / "pg").mkdir()
            with throwaway_postgres(work / "pg") as url:
                home = work / "pg-home" / "corp"
                home.parent.mkdir()
                ok &= _run(PostgresTarget(url), home, work / "pg-home", url, args.trials)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
