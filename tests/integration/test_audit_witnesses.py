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

import mailpki.instance.instance as instance_module
from mailpki.instance.audit_keys import MLDSA_KEY_FILE
from mailpki.instance.housekeeping import Housekeeping
from mailpki.instance.instance import Instance
from tests.fixtures.ci_policy import in_ci
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki, make_csr

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


def _start_krs(krs_home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`recovery-service serve` in its own process, once it answers /v1/info."""
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailpki", "recovery-service", "serve",
             "--home", str(krs_home), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v1/info", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"recovery-service serve did not start:\n{log.read_text()}")
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def served_krs(sqlite_home: Path, tmp_path: Path) -> Iterator[str]:
    """The instance's recovery service run apart: `recovery-service serve` over HTTP."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start_krs(sqlite_home / "krs", port, tmp_path / "krs.log")
    try:
        assert mailpki("config", "set", "recovery.url", url, "--home", sqlite_home).code == 0
        yield url
    finally:
        _stop(proc)


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
    # verify names the mail witness and how its copies are checked.
    verified = mailpki("audit", "verify", "--home", sqlite_home)
    assert verified.code == 0, verified.err
    assert "daily checkpoint mails to auditor@example.com are kept by their readers" in (
        " ".join(verified.err.split())
    )
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


def test_documented_openssl_checks_a_checkpoint_signature(
    sqlite_home: Path, tmp_path: Path
) -> None:
    """The auditor's commands of docs/audit.md, run as written."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text()
    section = page.split("## Audit witnesses", 1)[1]
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
            f"documented line failed: {line}\n{result.stdout}\n{result.stderr}"
        )
    assert "Verified OK" in result.stdout


def _witness_status(home: Path, name: str) -> tuple[dict[str, object], dict[str, object]]:
    result = mailpki("audit", "verify", "--home", home, "--json")
    report = json.loads(result.out)
    return report, next(w for w in report["witnesses"] if w["name"] == name)


def test_every_sealing_command_hands_its_checkpoint_over_and_a_down_witness_breaks_nothing(
    sqlite_home: Path, tmp_path: Path
) -> None:
    """No `audit seal`: issuing seals, and the seal reaches the recovery service (over
    HTTP) by itself; with the service down, issuance still works and verify says the
    witness is behind until the next command hands the missed checkpoints over."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "krs.log"
    proc = _start_krs(sqlite_home / "krs", port, log)
    try:
        assert mailpki("config", "set", "recovery.url", url, "--home", sqlite_home).code == 0
        csr = make_csr(tmp_path, "alice")
        issued = mailpki("ca", "issue", "--csr", csr, "--email", "alice@example.com",
                         "--name", "Alice Example", "--out", tmp_path / "alice.pem",
                         "--home", sqlite_home)  # fmt: skip
        assert issued.code == 0, issued.err
        report, krs = _witness_status(sqlite_home, "recovery service")
        assert report["ok"] is True, report["problems"]
        assert krs["last_seq"] == report["last_sealed_seq"] and krs["behind"] is False

        _stop(proc)  # the witness goes down: issuance goes on, with a warning
        csr = make_csr(tmp_path, "bob")
        issued = mailpki("ca", "issue", "--csr", csr, "--email", "bob@example.com",
                         "--name", "Bob Example", "--out", tmp_path / "bob.pem",
                         "--home", sqlite_home)  # fmt: skip
        assert issued.code == 0, issued.err
        assert "witness recovery service did not take the new checkpoint" in issued.err
        assert (tmp_path / "bob.pem").is_file()

        proc = _start_krs(sqlite_home / "krs", port, log)
        result = mailpki("audit", "verify", "--home", sqlite_home)
        assert result.code == 0, result.err
        assert "witness recovery service is behind" in result.err
        report, krs = _witness_status(sqlite_home, "recovery service")
        assert krs["behind"] is True
        assert isinstance(krs["last_seq"], int) and isinstance(report["last_sealed_seq"], int)
        assert krs["last_seq"] < report["last_sealed_seq"]

        # The next command that seals hands over everything the witness missed.
        assert mailpki("config", "set", "approval.auto", "false", "--home", sqlite_home).code == 0
        report, krs = _witness_status(sqlite_home, "recovery service")
        assert krs["behind"] is False and report["ok"] is True
        # Nothing is behind; the one note says where the service's own side is checked.
        assert report["notes"] == [
            "the recovery service runs apart: its own log and its side of each recovery are "
            "checked on its host ('mailpki recovery-service verify' there)"
        ]
    finally:
        _stop(proc)


def test_housekeeping_seals_and_hands_checkpoints_to_the_witnesses(
    sqlite_home: Path, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.log"
    assert mailpki("config", "set", "audit.witness_file", witness, "--home", sqlite_home).code == 0
    before = witness.read_text().count("\n")
    instance = Instance.open(sqlite_home)  # as the server opens it: no hand-over on seal
    try:
        instance.set_config("approval.auto", "false", actor="test")  # a record, unsealed
        chores = Housekeeping(instance)
        assert [name for name, _ in chores.chores()][-1] == "witness"
        assert "witness" in chores.run_once()
    finally:
        instance.close()
    lines = witness.read_text().splitlines()
    assert len(lines) == before + 1
    report, file = _witness_status(sqlite_home, "file")
    assert report["ok"] is True and file["behind"] is False
    assert json.loads(lines[-1])["seq"] == report["last_sealed_seq"] == report["records"]


def test_a_witness_that_holds_nothing_fails_verify(sqlite_home: Path, tmp_path: Path) -> None:
    """Decided: a witness with no checkpoint of an instance that has a log cannot vouch
    for it (never handed over, or its copy lost or swapped): verify fails and says so."""
    witness = tmp_path / "witness.log"
    assert mailpki("config", "set", "audit.witness_file", witness, "--home", sqlite_home).code == 0
    assert mailpki("audit", "verify", "--home", sqlite_home).code == 0
    witness.write_text("")  # the file was replaced by an empty one
    result = mailpki("audit", "verify", "--home", sqlite_home)
    assert result.code != 0
    assert f"witness file ({witness}) holds no checkpoint of this instance" in result.err
    report, _ = _witness_status(sqlite_home, "file")
    assert [p["kind"] for p in report["problems"]] == ["witness-empty"]
    # `audit seal` hands everything over again; then it verifies.
    assert mailpki("audit", "seal", "--home", sqlite_home).code == 0
    assert mailpki("audit", "verify", "--home", sqlite_home).code == 0


def test_upgrade_gives_an_older_instance_its_mldsa_audit_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance made before post-quantum checkpoints (ECDSA only) gets its ML-DSA-65
    key from `mailpki upgrade`; its old checkpoints keep verifying."""
    home = tmp_path / "corp"
    with monkeypatch.context() as patch:
        patch.setattr(instance_module, "load_or_create_mldsa", lambda **_: None)
        init = mailpki("init", "--home", home, "--org", "Example Corp", "--domain",
                       "example.com", "--ca-key-type", "p256", "--org-id", "NTRGB-12345678")  # fmt: skip
        assert init.code == 0, init.err
        assert not (home / "keys" / MLDSA_KEY_FILE).exists()
    result = mailpki("upgrade", "--home", home)
    assert result.code == 0, result.err
    assert "audit: keys ECDSA -> ECDSA + ML-DSA-65" in result.out
    assert (home / "keys" / MLDSA_KEY_FILE).is_file()
    verify = mailpki("audit", "verify", "--home", home, "--json")
    assert verify.code == 0, verify.err
    again = mailpki("upgrade", "--home", home)
    assert "audit: keys ECDSA + ML-DSA-65, already current" in again.out
    events = [json.loads(line)["event"] for line in _exported_records(home, tmp_path)]
    assert events.count("audit.key_added") == 1 and "instance.upgraded" in events


def _exported_records(home: Path, tmp_path: Path) -> list[str]:
    bundle = tmp_path / "bundle"
    assert mailpki("audit", "export", "--home", home, "--out", bundle).code == 0
    return (bundle / "records.jsonl").read_text().splitlines()
