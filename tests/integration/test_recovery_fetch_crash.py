"""kill -9 of `mailpki recovery fetch` at each point, then the same fetch again.

A fetch killed after the Key Recovery Service released the key (its log says so) but
before the instance recorded anything left the two logs disagreeing for ever, and
`audit verify` failing. Run again, the fetch is refused (a request is fetched once)
and the instance records the interrupted recovery as failed, so the logs agree; a
fetch killed before the service committed simply goes through the second time.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from benchmarks.reliability.check_crash import FETCH_POINTS, killed_at

from tests.integration.cli_helpers import mailpki
from tests.integration.test_recovery_cli import (
    CORE_TEAM,
    RELAXED,
    Team,
    enroll,
    init_instance,
    instance_records,
    krs_records,
    ok,
    refused,
    requests_of,
    team_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Team:
    folder = tmp_path_factory.mktemp("fetch-crash")
    home = init_instance(folder / "corp")
    for key, value in RELAXED.items():
        ok(mailpki("recovery-service", "config", "set", "--home", home / "krs", key, value))
    made = team_for(home, folder, CORE_TEAM)
    enroll(home, folder, "bob")
    return made


def records_for(records: list[dict[str, object]], request_id: str) -> list[str]:
    return [
        str(r["event"])
        for r in records
        if isinstance(r["data"], dict) and r["data"].get("request_id") == request_id
    ]


@pytest.mark.parametrize("point", FETCH_POINTS)
def test_a_killed_fetch_run_again_leaves_both_logs_agreeing(
    team: Team, tmp_path: Path, point: str
) -> None:
    request_id = team.approved("carol", "bob")
    out = tmp_path / "bob.p12"
    argv = [
        "recovery", "fetch", request_id, "--home", str(team.home),
        "--p12", str(team.p12["carol"]), "--password-file", str(team.pw["carol"]),
        "--out", str(out),
    ]  # fmt: skip
    proc = killed_at(point, 1, argv)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    released = requests_of(team.home)[request_id]["state"] == "recovered"
    assert released == (point != "fetch-uncommitted")
    # A file only with its password printed before it.
    assert out.exists() == (point == "fetch-written")
    if out.exists():
        assert "PKCS#12 password (shown once, not stored)" in proc.stdout

    again = tmp_path / "bob-again.p12"
    result = team.fetch(request_id, "carol", again)
    mine = records_for(instance_records(team.home), request_id)
    if not released:
        ok(result)  # the service had rolled back: the request was still there to fetch
        assert again.is_file() and "key.recovered" in mine
    elif point == "fetch-answered":
        line = refused(result, "was already fetched", code=4)
        assert "interrupted" in line
        assert not again.exists()
        assert "recovery.failed" in mine and "key.recovered" not in mine
    else:  # the instance had recorded it: the usual "fetched once"
        refused(result, "was already fetched", code=4)
        assert "key.recovered" in mine and "recovery.failed" not in mine
    assert records_for(krs_records(team.home), request_id).count("key.recovered") == 1
    verify = mailpki("audit", "verify", "--home", team.home)
    assert verify.code == 0, verify.out + verify.err
