"""Audit checkpoints anchored outside the database, attacked with the databases' own
clients (`sqlite3`, `psql`): every tampering kind is detected through the witnesses.

The witnesses are real: the recovery service over HTTP (`recovery-service serve` as its
own process), a witness file outside the home folder, and mail to a real aiosmtpd.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks.reliability.tampering import (
    KINDS,
    PostgresTarget,
    SqliteTarget,
    detected,
    make_history,
    tamper,
)

from tests.fixtures.ci_policy import in_ci
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration
SRC = Path(__file__).resolve().parents[2] / "src"


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        if in_ci():
            pytest.fail(f"{tool} is missing (CI=true: scripts/test must install it)")
        pytest.skip(f"{tool} is missing")


@pytest.fixture(scope="module")
def sqlite_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(home, pristine copy, older copy): a sealed log handed to the embedded service
    and to a witness file."""
    _need("sqlite3")
    work = tmp_path_factory.mktemp("tamper")
    home = work / "corp"
    target = SqliteTarget(home / "mailpki.db")
    older = make_history(home, target, work, database_url=None)
    assert (
        mailpki("config", "set", "audit.witness_file", work / "witness.log", "--home", home).code
        == 0
    )
    assert mailpki("audit", "seal", "--home", home).code == 0
    pristine = work / "pristine.db"
    target.save(pristine)
    return home, pristine, older


@pytest.mark.parametrize("kind", KINDS)
def test_every_tampering_kind_is_detected_on_sqlite(
    kind: str, sqlite_history: tuple[Path, Path, Path]
) -> None:
    home, pristine, older = sqlite_history
    target = SqliteTarget(home / "mailpki.db")
    target.restore(pristine)
    assert not detected(home), "the untouched log must verify"
    tamper(target, kind, 1, older)
    try:
        result = mailpki("audit", "verify", "--home", home)
        assert result.code != 0
        assert "audit log tampered" in result.err
    finally:
        target.restore(pristine)


def test_the_issue_attack_names_what_is_missing(sqlite_history: tuple[Path, Path, Path]) -> None:
    """Delete the last record and its checkpoint, reset the head: the witness saw it."""
    home, pristine, older = sqlite_history
    target = SqliteTarget(home / "mailpki.db")
    target.restore(pristine)
    try:
        tamper(target, "truncate+drop-checkpoint+reset-head", 1, older)
        result = mailpki("audit", "verify", "--home", home)
        assert result.code != 0
        assert "saw it sealed up to record" in result.err
        assert "missing from the database" in result.err
        assert "NOT independent" in result.out  # the embedded service under HOME/krs
        target.restore(pristine)
        tamper(target, "wipe", 1, older)
        result = mailpki("audit", "verify", "--home", home)
        assert "the log was wiped" in result.err
        assert "have no cert.issued record" in result.err
    finally:
        target.restore(pristine)


def test_tampering_on_postgresql_is_detected(tmp_path: Path, postgres_database: str) -> None:
    _need("psql")
    _need("pg_dump")
    home = tmp_path / "corp"
    target = PostgresTarget(postgres_database)
    older = make_history(home, target, tmp_path, database_url=postgres_database)
    pristine = tmp_path / "pristine.sql"
    target.save(pristine)
    assert not detected(home)
    for kind in ("truncate+drop-checkpoint+reset-head", "wipe", "roll-back-to-older-copy"):
        tamper(target, kind, 1, older)
        assert detected(home), kind
        target.restore(pristine)
    assert not detected(home)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served_krs(sqlite_home: Path, tmp_path: Path) -> Iterator[str]:
    """The instance's recovery service run apart: `recovery-service serve` over HTTP."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    log = tmp_path / "krs.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailpki", "recovery-service", "serve",
             "--home", str(sqlite_home / "krs"), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/info", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"recovery-service serve did not start:\n{log.read_text()}")
                time.sleep(0.1)
        assert mailpki("config", "set", "recovery.url", url, "--home", sqlite_home).code == 0
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def test_recovery_service_over_http_witnesses_and_refuses_a_rollback(
    sqlite_home: Path, served_krs: str, tmp_path: Path
) -> None:
    sealed = mailpki("audit", "seal", "--home", sqlite_home)
    assert sealed.code == 0, sealed.err
    backup = tmp_path / "older.db"
    SqliteTarget(sqlite_home / "mailpki.db").save(backup)
    assert mailpki("config", "set", "approval.auto", "false", "--home", sqlite_home).code == 0
    assert mailpki("audit", "seal", "--home", sqlite_home).code == 0
    result = mailpki("audit", "verify", "--home", sqlite_home, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    krs = next(w for w in report["witnesses"] if w["name"] == "recovery service")
    assert krs["independent"] is True and krs["location"] == served_krs and krs["held"] >= 2

    # The database is restored from the older copy: the witness over HTTP knows better.
    SqliteTarget(sqlite_home / "mailpki.db").restore(backup)
    result = mailpki("audit", "verify", "--home", sqlite_home)
    assert result.code != 0
    assert f"witness recovery service ({served_krs}) saw it sealed up to record" in result.err
    # ... and refuses the forked history the rolled-back instance tries to hand in.
    assert mailpki("config", "set", "approval.auto", "true", "--home", sqlite_home).code == 0
    result = mailpki("audit", "seal", "--home", sqlite_home)
    assert result.code != 0
    assert "which this log no longer has" in result.err


def test_daily_checkpoint_is_mailed_to_auditors(
    sqlite_home: Path, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    for key, value in (
        ("smtp.host", smtp_server.host), ("smtp.port", str(smtp_server.port)),
        ("audit.witness_mail", "auditor@example.com"),
    ):  # fmt: skip
        assert mailpki("config", "set", key, value, "--home", sqlite_home).code == 0
    assert mailpki("audit", "seal", "--home", sqlite_home).code == 0
    assert mailpki("audit", "seal", "--home", sqlite_home).code == 0  # once a day, not twice
    mails = [m for m in smtp_server.messages if "audit checkpoint" in str(m["Subject"])]
    assert len(mails) == 1 and mails[0].rcpt_tos == ["auditor@example.com"]
    saved = tmp_path / "checkpoint.eml"
    saved.write_bytes(mails[0].raw)
    bundle = tmp_path / "bundle"
    assert mailpki("audit", "export", "--home", sqlite_home, "--out", bundle).code == 0
    result = mailpki("audit", "verify", "--bundle", bundle, "--witness", saved)
    assert result.code == 0, result.err
    assert "independent: a copy you brought; holds 1 checkpoint" in result.out
    # The mailed checkpoint outlives a cut log in the bundle.
    records = (bundle / "records.jsonl").read_text().splitlines()
    (bundle / "records.jsonl").write_text("\n".join(records[:-1]) + "\n")
    cps = (bundle / "checkpoints.jsonl").read_text().splitlines()
    (bundle / "checkpoints.jsonl").write_text("\n".join(cps[:-1]) + "\n")
    result = mailpki("audit", "verify", "--bundle", bundle, "--witness", saved)
    assert result.code != 0 and "saw it sealed up to record" in result.err


def test_readme_openssl_checks_a_checkpoint_signature(sqlite_home: Path, tmp_path: Path) -> None:
    """The README's auditor commands, run as written."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Audit witnesses", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for line in lines:
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=sqlite_home.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"README line failed: {line}\n{result.stdout}\n{result.stderr}"
        )
    assert "Verified OK" in result.stdout
