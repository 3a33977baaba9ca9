"""A revoked person is told: `ca revoke` (and every other revocation) queues a mail to the
subscriber in the revocation's transaction and sends it through the outbox, here to a
real SMTP server: the reason in plain words, the date, and what to do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailpki.ca.serials import SERIAL_DIGITS
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration


def enroll(home: Path, tmp_path: Path, mail: str, name: str) -> str:
    password = tmp_path / "pw"
    password.write_text("a long passphrase 2026\n")
    result = mailpki(
        "enroll", "--home", home, "--email", mail, "--name", name,
        "--out", tmp_path / f"{mail}.p12", "--password-file", password,
    )  # fmt: skip
    assert result.code == 0, result.err
    match = re.search(r"certificate ([0-9A-F]+)", result.out + result.err)
    assert match, result.out
    return match.group(1)


def test_revocation_mails_the_subscriber(
    sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    for key, value in [
        ("smtp.host", smtp_server.host),
        ("smtp.port", str(smtp_server.port)),
        ("web.base_url", "https://pki.example.com"),
    ]:
        assert mailpki("config", "set", "--home", sqlite_home, key, value).code == 0
    serial = enroll(sqlite_home, tmp_path, "rita.revoked@example.com", "Rita Revoked")
    smtp_server.messages.clear()  # the escrow notice

    result = mailpki("ca", "revoke", "--home", sqlite_home, serial, "--reason", "keyCompromise")
    assert result.code == 0, result.err
    assert "rita.revoked@example.com is told by mail" in result.out
    [notice] = smtp_server.messages
    assert notice.rcpt_tos == ["rita.revoked@example.com"]
    assert "your e-mail certificate was revoked" in notice["Subject"]
    text = notice.text
    assert serial.rjust(SERIAL_DIGITS, "0") in text
    assert "the private key may be known to someone else" in text
    assert re.search(r"revoked on\s+\d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "Remove the old certificate" in text and "https://pki.example.com/" in text
    html = notice.message.get_body(preferencelist=("html",))
    assert html is not None and "https://pki.example.com/" in str(html.get_content())


def test_a_failed_revocation_mails_nobody(sqlite_home: Path, tmp_path: Path) -> None:
    serial = enroll(sqlite_home, tmp_path, "sam@example.com", "Sam Stays")
    assert mailpki("ca", "revoke", "--home", sqlite_home, serial).code == 0
    outbox = sqlite_home / "outbox"
    before = sorted(outbox.iterdir())
    again = mailpki("ca", "revoke", "--home", sqlite_home, serial)
    assert again.code != 0 and "already revoked" in again.err
    assert sorted(outbox.iterdir()) == before
    notices = [p for p in before if "was revoked" in p.read_text(errors="replace")]
    assert len(notices) == 1
