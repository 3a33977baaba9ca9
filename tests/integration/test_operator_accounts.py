"""Local operator accounts on SQLite and PostgreSQL: the CLI (add prints the TOTP URI once,
list shows no secret, remove, passwd, bad input changes nothing) and the logon with
password and TOTP code (replay, drift, one message for every wrong part, audit)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from mailpki.auth.operators import WRONG_OPERATOR_LOGON
from mailpki.auth.totp import hotp, step_at, totp_code
from mailpki.errors import AuthenticationError
from mailpki.instance.instance import Instance
from mailpki.instance.operators import log_on, operator_still_valid
from mailpki.store.models import AuditRecord
from tests.integration.cli_helpers import mailpki

PASSWORD = "Tall-Ships-Sail-42"


def add(home: Path, tmp_path: Path, login: str, role: str = "operator") -> tuple[bytes, str]:
    """`operator add`; the TOTP secret (from the printed URI) and the whole output."""
    pw = tmp_path / f"{login}.pw"
    pw.write_text(PASSWORD + "\n")
    result = mailpki(
        "operator", "add", "--home", home, login, "--role", role, "--password-file", pw
    )
    assert result.code == 0, result.err
    uris = [line for line in result.out.splitlines() if line.startswith("otpauth://")]
    assert len(uris) == 1, result.out
    query = parse_qs(urlsplit(uris[0]).query)
    assert urlsplit(uris[0]).path == f"/mailpki:{login}"
    assert query["issuer"] == ["mailpki"]
    b32 = query["secret"][0]
    return base64.b32decode(b32 + "=" * (-len(b32) % 8)), result.out + result.err


def events(home: Path) -> list[tuple[str, str, str]]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            rows = session.execute(
                select(AuditRecord.event, AuditRecord.actor, AuditRecord.data).order_by(
                    AuditRecord.seq
                )
            ).all()
    finally:
        instance.close()
    return [(event, actor, str(data)) for event, actor, data in rows]


def test_add_list_passwd_remove(home: Path, tmp_path: Path) -> None:
    secret, output = add(home, tmp_path, "jane.doe", "auditor")
    b32 = base64.b32encode(secret).decode().rstrip("=")
    assert "█" in output or "▀" in output  # the QR code
    listed = mailpki("operator", "list", "--home", home)
    assert listed.code == 0 and "jane.doe" in listed.out and "auditor" in listed.out
    assert b32 not in listed.out + listed.err and "argon2" not in listed.out
    assert "otpauth" not in listed.out

    new_pw = tmp_path / "new.pw"
    new_pw.write_text("Other-Harbour-Lights-7\n")
    changed = mailpki("operator", "passwd", "--home", home, "jane.doe", "--password-file", new_pw)
    assert changed.code == 0, changed.err
    removed = mailpki("operator", "remove", "--home", home, "jane.doe")
    assert removed.code == 0, removed.err
    assert "jane.doe" not in mailpki("operator", "list", "--home", home).out

    recorded = events(home)
    names = [e for e, _, _ in recorded]
    for event in ("operator.added", "operator.password_changed", "operator.removed"):
        assert event in names
    for event, actor, data in recorded:
        if event.startswith("operator."):
            assert actor.startswith("cli:")
            assert b32 not in data and PASSWORD not in data


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (["jane", "--role", "boss"], PASSWORD, "unknown role"),
        (["Jane Doe", "--role", "operator"], PASSWORD, "operator login is"),
        (["jane", "--role", "operator"], "", "is empty"),
        (["jane", "--role", "operator"], "short", "at least 12"),
        (["jane", "--role", "operator"], "jane-Password-2024!", "must not contain"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    home: Path, tmp_path: Path, args: list[str], password: str, message: str
) -> None:
    pw = tmp_path / "pw"
    pw.write_text(password)
    before = len(events(home))
    result = mailpki("operator", "add", "--home", home, *args, "--password-file", pw)
    assert result.code != 0
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert "otpauth" not in result.out
    assert "No local operator" in mailpki("operator", "list", "--home", home).err
    assert len(events(home)) == before


def test_duplicates_unknown_logins_and_missing_files(home: Path, tmp_path: Path) -> None:
    add(home, tmp_path, "jane")
    pw = tmp_path / "jane.pw"
    again = mailpki(
        "operator", "add", "--home", home, "jane", "--role", "officer", "--password-file", pw
    )
    assert again.code != 0 and "exists" in again.err and "otpauth" not in again.out
    assert "officer" not in mailpki("operator", "list", "--home", home).out
    for command in (["remove", "nobody"], ["passwd", "nobody", "--password-file", pw]):
        result = mailpki("operator", *command, "--home", home)
        assert result.code != 0 and "no operator named 'nobody'" in result.err
    missing = mailpki(
        "operator", "passwd", "--home", home, "jane", "--password-file", tmp_path / "no"
    )
    assert missing.code != 0 and "does not exist" in missing.err


def test_logon_with_password_and_code_once(home: Path, tmp_path: Path) -> None:
    secret, _ = add(home, tmp_path, "jane", "officer")
    instance = Instance.open(home)
    try:
        now = time.time()
        code = totp_code(secret, now)
        identity = log_on(instance, "jane", PASSWORD, code, source="10.0.0.1")
        logged_on_at = identity.pop("logged_on_at")
        assert identity == {
            "login": "jane", "source": "operator", "display_name": "jane",
            "operator_roles": ["officer"],
        }  # fmt: skip
        assert operator_still_valid(instance, {**identity, "logged_on_at": logged_on_at})
        # The same code again (replay), wrong parts, unknown login: one message each time.
        tries = [
            ("jane", PASSWORD, code),
            ("jane", "Wrong-Password-99", totp_code(secret, now + 30)),
            ("nobody", PASSWORD, code),
            ("jane", PASSWORD, "000000" if code != "000000" else "111111"),
            ("jane", PASSWORD, "12345"),
            ("jane", PASSWORD, "1" * 100_000),
            ("j" * 100_000, PASSWORD, code),
        ]
        for login, password, typed in tries:
            with pytest.raises(AuthenticationError) as refused:
                log_on(instance, login, password, typed, source="10.0.0.2")
            assert str(refused.value) in (WRONG_OPERATOR_LOGON,) or "too many" in str(refused.value)
        # An older code (step before the used one) is refused too: steps only go forward.
        with pytest.raises(AuthenticationError):
            log_on(instance, "jane", PASSWORD, hotp(secret, step_at(now) - 1), source="10.0.0.3")
    finally:
        instance.close()
    names = [e for e, _, _ in events(home)]
    assert names.count("operator.logged_on") == 1
    assert names.count("operator.logon_failed") >= 5


def test_clock_drift_of_one_step_and_the_lockout(home: Path, tmp_path: Path) -> None:
    secret, _ = add(home, tmp_path, "ops")
    instance = Instance.open(home)
    try:
        ahead = hotp(secret, step_at(time.time()) + 1)  # the phone's clock runs 30 s fast
        assert log_on(instance, "ops", PASSWORD, ahead, source="s")["login"] == "ops"
        far = hotp(secret, step_at(time.time()) + 5)
        with pytest.raises(AuthenticationError, match="wrong login, password or code"):
            log_on(instance, "ops", PASSWORD, far, source="s")
        limit = int(instance.config.get("auth.max_failures"))
        messages = []
        for _ in range(limit + 1):
            with pytest.raises(AuthenticationError) as refused:
                log_on(instance, "ops", "Wrong-Password-99", "123456", source="s")
            messages.append(str(refused.value))
        assert messages[-1].startswith("too many failed logons")
        # Locked: even the right password and a fresh code are refused now.
        with pytest.raises(AuthenticationError, match="too many failed logons"):
            log_on(instance, "ops", PASSWORD, hotp(secret, step_at(time.time()) + 1), source="s")
    finally:
        instance.close()
