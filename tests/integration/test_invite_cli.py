"""`mailpki invite` end to end: embedded directory, a real SMTP server, one-time links."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from mailpki.enrollment.invitations import (
    InvitationSuperseded,
    InvitationUsed,
    redeem,
)
from mailpki.errors import MailPKIError
from mailpki.instance.instance import Instance
from mailpki.store.db import Database
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

BASE = "https://pki.example.com"
LINK_RE = re.compile(re.escape(BASE) + r"/enroll/([A-Za-z0-9_-]{43})")

PEOPLE = """login,mail,name,site,enabled
alice,alice@example.com,Alice Archer,Sales,true
bob,bob@example.com,Bob Baker,Sales,true
carol,carol@example.com,Carol Cook,Sales,false
dave,dave@example.com,Dave Dyer,Support,true
"""


def setup(home: Path, tmp_path: Path, smtp: SMTPServer) -> None:
    people = tmp_path / "people.csv"
    people.write_text(PEOPLE)
    result = mailpki("directory", "import", "--home", home, people)
    assert result.code == 0, result.err
    for key, value in [
        ("web.base_url", BASE),
        ("smtp.host", smtp.host),
        ("smtp.port", str(smtp.port)),
    ]:
        result = mailpki("config", "set", "--home", home, key, value)
        assert result.code == 0, result.err


def links(smtp: SMTPServer, to: str) -> list[str]:
    return [
        token
        for mail in smtp.messages
        if to in mail.rcpt_tos
        for token in LINK_RE.findall(mail.text)
    ]


def open_db(home: Path) -> Database:
    instance = Instance.open(home)
    return Database(instance.config.database_url)


def test_invite_mails_one_time_links(
    sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    setup(sqlite_home, tmp_path, smtp_server)
    result = mailpki("invite", "--home", sqlite_home, "alice", "bob")
    assert result.code == 0, result.err
    assert "2 invited" in result.out
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == [
        "alice@example.com",
        "bob@example.com",
    ]
    (token,) = links(smtp_server, "alice@example.com")
    # Text and HTML, and the HTML button carries the same link.
    [received] = [m for m in smtp_server.messages if "alice@example.com" in m.rcpt_tos]
    html_part = received.message.get_body(preferencelist=("html",))
    assert html_part is not None and f"/enroll/{token}" in html_part.get_content()
    db = open_db(sqlite_home)
    try:
        assert redeem(db, token).login == "alice"
        with pytest.raises(InvitationUsed):
            redeem(db, token)
        # Bob again without --resend: skipped; with it, his first link is dead.
        again = mailpki("invite", "--home", sqlite_home, "bob")
        assert again.code == 0 and "already invited" in again.out
        assert len(links(smtp_server, "bob@example.com")) == 1
        resent = mailpki("invite", "--home", sqlite_home, "bob", "--resend")
        assert resent.code == 0, resent.err
        old, new = links(smtp_server, "bob@example.com")
        with pytest.raises(InvitationSuperseded):
            redeem(db, old)
        assert redeem(db, new).login == "bob"
    finally:
        db.dispose()


def test_invite_skips_disabled_and_reports_unknown(
    sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    setup(sqlite_home, tmp_path, smtp_server)
    result = mailpki("invite", "--home", sqlite_home, "carol", "nobody", "dave")
    assert result.code == 1
    assert "skipped carol: disabled" in result.out
    assert "nobody: not found" in result.err
    assert [r for m in smtp_server.messages for r in m.rcpt_tos] == ["dave@example.com"]


def test_invite_all_with_filter(sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer) -> None:
    setup(sqlite_home, tmp_path, smtp_server)
    result = mailpki("invite", "--home", sqlite_home, "--all", "--filter", "ou=Sales")
    assert result.code == 0, result.err
    assert "2 invited, 1 skipped" in result.out  # carol is disabled, dave is in Support
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == [
        "alice@example.com",
        "bob@example.com",
    ]
    assert mailpki("invite", "--home", sqlite_home).code == 2
    assert mailpki("invite", "--home", sqlite_home, "--all", "alice").code == 2


def test_concurrent_redeem_exactly_one_wins(
    home: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    setup(home, tmp_path, smtp_server)
    assert mailpki("invite", "--home", home, "alice").code == 0
    (token,) = links(smtp_server, "alice@example.com")
    databases = [open_db(home) for _ in range(4)]
    barrier = threading.Barrier(len(databases))
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(db: Database) -> None:
        barrier.wait()
        try:
            redeem(db, token)
            outcome = "won"
        except InvitationUsed:
            outcome = "used"
        except MailPKIError as exc:
            outcome = f"error: {exc}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt, args=(db,)) for db in databases]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for db in databases:
            db.dispose()
    assert sorted(outcomes) == ["used", "used", "used", "won"], outcomes


def enroll_user(home: Path, tmp_path: Path, login: str) -> None:
    password = tmp_path / "p12.pw"
    password.write_text("a long passphrase 2026\n")
    result = mailpki(
        "enroll", "--home", home, "--user", login, "--out", tmp_path / f"{login}.p12",
        "--password-file", password,
    )  # fmt: skip
    assert result.code == 0, result.out + result.err


def test_invite_skips_a_certificate_holder_unless_forced(
    sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    setup(sqlite_home, tmp_path, smtp_server)
    enroll_user(sqlite_home, tmp_path, "alice")
    result = mailpki("invite", "--home", sqlite_home, "alice", "bob")
    assert result.code == 0, result.err
    assert "1 invited, 1 skipped" in result.out
    skipped = next(line for line in result.out.splitlines() if line.startswith("skipped alice"))
    assert "already holds a valid certificate" in skipped and "--force" in skipped
    assert re.search(r"certificate [0-9A-F]{32}, valid until \d{4}-\d\d-\d\d", skipped)
    assert links(smtp_server, "alice@example.com") == []
    forced = mailpki("invite", "--home", sqlite_home, "alice", "--force")
    assert forced.code == 0 and "invited alice" in forced.out, forced.out + forced.err
    assert "invited (--force)" in forced.err
    assert len(links(smtp_server, "alice@example.com")) == 1


def test_invite_near_expiry_is_a_renewal(
    sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    setup(sqlite_home, tmp_path, smtp_server)
    shipped = Path(__file__).resolve().parents[2] / "src/mailpki/policy/profiles"
    profile = (shipped / "sponsored-multipurpose.toml").read_text()
    (sqlite_home / "profiles").mkdir(exist_ok=True)
    (sqlite_home / "profiles" / "sponsored-multipurpose.toml").write_text(
        re.sub(r"(?m)^validity_days = \d+$", "validity_days = 20", profile)
    )
    enroll_user(sqlite_home, tmp_path, "dave")
    result = mailpki("invite", "--home", sqlite_home, "dave")
    assert result.code == 0 and "invited dave" in result.out, result.out + result.err
    assert "dave: invited to renew" in result.err
    assert len(links(smtp_server, "dave@example.com")) == 1


@pytest.mark.parametrize(
    ("logon", "says", "not_says"),
    [
        ("pin", "employee id and the one-time PIN that HR gives you", "usual login"),
        ("directory", "usual login and password", "PIN"),
        ("directory,pin", "usual login and password (the ones", None),
    ],
)
def test_the_invitation_says_how_to_log_on(
    sqlite_home: Path,
    tmp_path: Path,
    smtp_server: SMTPServer,
    logon: str,
    says: str,
    not_says: str | None,
) -> None:
    setup(sqlite_home, tmp_path, smtp_server)
    assert mailpki("config", "set", "--home", sqlite_home, "portal.logon", logon).code == 0
    assert mailpki("invite", "--home", sqlite_home, "bob").code == 0
    [mail] = [m for m in smtp_server.messages if "bob@example.com" in m.rcpt_tos]
    text = " ".join(mail.text.split())
    assert "The page first asks who you are." in text and says in text
    if not_says:
        assert not_says not in text
    html_part = mail.message.get_body(preferencelist=("html",))
    assert html_part is not None and says in " ".join(str(html_part.get_content()).split())
