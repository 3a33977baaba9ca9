"""kill -9 of the real `mailpki bulk-enroll` process, at several points.

A key counts as delivered only once its line (with the generated password) has been
flushed to stdout; the workers stop with the parent; `keys reconcile --all-pending`
then revokes everything that was written but not delivered. The kill points and the
invariant checks are those of the reliability check (benchmarks/reliability/
check_crash.py): no key without escrow, no delivered file without its printed
password, no duplicate serial, nothing left pending, no worker left running, an intact
audit log.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from benchmarks.reliability.check_crash import (
    BULK_POINTS,
    kill_bulk,
    killed_at,
    people_csv,
    printed_rows,
    survivors,
)

from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

POSTGRES_POINTS = {"after-flush", "timed: first file"}
CASES = [pytest.param("sqlite", point, nth, id=f"sqlite-{point}") for point, nth in BULK_POINTS] + [
    pytest.param("postgresql", point, nth, id=f"postgresql-{point}")
    for point, nth in BULK_POINTS
    if point in POSTGRES_POINTS
]


@pytest.mark.parametrize(("database_url", "point", "nth"), CASES, indirect=["database_url"])
def test_kill_9_during_bulk_enroll_leaves_a_consistent_instance(
    home: Path, tmp_path: Path, point: str, nth: int
) -> None:
    found = kill_bulk(home, tmp_path, "crash-", point, nth)
    assert found.clean, found


def escrow_states(home: Path) -> dict[int, str]:
    result = mailpki("keys", "list", "--home", home, "--json")
    assert result.code == 0, result.err
    return {int(row["serial"], 16): row["state"] for row in json.loads(result.out)}


def test_lines_lost_with_the_process_are_not_delivered_and_reconcile_revokes_them(
    sqlite_home: Path, tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people_csv(people, "lost-", 16)
    out_dir = tmp_path / "out"
    argv = [
        "bulk-enroll", "--home", str(sqlite_home), "--input", str(people),
        "--out", str(out_dir), "--workers", "2",
    ]  # fmt: skip
    # Killed with the second batch's lines written into stdout's buffer, never flushed.
    proc = killed_at("before-flush", 2, argv)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert survivors(str(out_dir)) == 0  # the workers died with their parent

    printed = {int(serial, 16): pw for serial, pw in printed_rows(proc.stdout).items()}
    states = escrow_states(sqlite_home)
    delivered = {serial for serial, state in states.items() if state == "delivered"}
    pending = {serial for serial, state in states.items() if state == "pending"}
    assert printed and delivered == set(printed)  # delivered: exactly what reached stdout
    assert pending, states  # written (or being written), never shown
    assert len(list(out_dir.glob("*.p12"))) >= len(printed) + 1

    # Within the delivery lease, plain reconcile leaves them, and says what to run.
    plain = mailpki("keys", "reconcile", "--home", sqlite_home)
    assert plain.code == 0, plain.err
    assert "0 revoked" in plain.out
    assert f"{len(pending)} not yet delivered but within their delivery lease" in plain.out
    assert "--all-pending" in plain.out
    result = mailpki("keys", "reconcile", "--home", sqlite_home, "--all-pending")
    assert result.code == 0, result.err
    revoked = {
        int(line.split()[1], 16) for line in result.out.splitlines() if line.startswith("revoked ")
    }
    assert revoked == pending
    assert f"{len(pending)} revoked" in result.out and "lease" not in result.out
    after = escrow_states(sqlite_home)
    assert {s for s, state in after.items() if state == "delivered"} == delivered
    assert {s for s, state in after.items() if state == "revoked"} == pending
    certs = json.loads(mailpki("certs", "list", "--home", sqlite_home, "--json").out)
    status = {int(c["serial"], 16): c["status"] for c in certs}
    assert all(status[s] == "revoked" for s in pending)
    assert all(status[s] == "valid" for s in delivered)
    assert mailpki("audit", "verify", "--home", sqlite_home).code == 0
