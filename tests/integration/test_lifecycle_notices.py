"""Expiry notices and the officers' summary through a real SMTP server (aiosmtpd), on
SQLite and PostgreSQL: once per threshold, one-time renewal links, no duplicate mail
when two nodes run the lifecycle at the same moment.

Time is moved by giving the lifecycle its clock (`now`), or by certificates that really
expire soon (a profile override with a 20-day validity); never by sleeping."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import select

from mailpki.ca.serials import show_serial, to_hex
from mailpki.enrollment.invitations import peek
from mailpki.instance.housekeeping import Housekeeping
from mailpki.instance.instance import Instance
from mailpki.instance.lifecycle import run
from mailpki.store.models import CertificateRecord
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

BASE = "https://pki.example.com"
LINK_RE = re.compile(re.escape(BASE) + r"/enroll/([A-Za-z0-9_-]{43})")
OFFICER = "officer@example.com"
PEOPLE = """login,mail,name,enabled
alice,alice@example.com,Alice Archer,true
bob,bob@example.com,Bob Baker,true
"""


def ok(result):  # type: ignore[no-untyped-def]
    assert result.code == 0, (result.out, result.err)
    return result


@pytest.fixture
def corp(home: Path, tmp_path: Path, smtp_server: SMTPServer) -> Path:
    people = tmp_path / "people.csv"
    people.write_text(PEOPLE)
    ok(mailpki("directory", "import", "--home", home, people))
    for key, value in (
        ("keymanager.key_type", "p256"),
        ("keymanager.pool_size", "0"),
        ("web.base_url", BASE),
        ("smtp.host", smtp_server.host),
        ("smtp.port", str(smtp_server.port)),
        ("lifecycle.officers", OFFICER),
    ):
        ok(mailpki("config", "set", "--home", home, key, value))
    (tmp_path / "pw").write_text("notice-test-password-1\n")
    return home


def enroll(home: Path, tmp_path: Path, email: str, name: str) -> str:
    result = ok(mailpki("enroll", "--home", home, "--email", email, "--name", name, "--out",
                        tmp_path / f"{email}.p12", "--password-file", tmp_path / "pw"))  # fmt: skip
    return to_hex(int(result.out.split("certificate ")[1].split(",")[0], 16))


def not_after(home: Path, serial: str) -> datetime:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            value = session.scalar(
                select(CertificateRecord.not_after).where(CertificateRecord.serial == serial)
            )
        assert value is not None
        return value
    finally:
        instance.close()


def notices(smtp: SMTPServer, to: str) -> list[str]:
    return [m.text for m in smtp.messages if to in m.rcpt_tos and "expires" in m["Subject"]]


def lifecycle_at(home: Path, when: datetime) -> None:
    instance = Instance.open(home)
    try:
        report = run(instance, actor="test", now=when)
        assert not report.errors, report.errors
    finally:
        instance.close()


def test_notices_once_per_threshold_with_a_one_time_link(
    corp: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    alice = enroll(corp, tmp_path, "alice@example.com", "Alice Archer")
    bob = enroll(corp, tmp_path, "bob@example.com", "Bob Baker")
    expiry = not_after(corp, alice)
    smtp_server.messages.clear()

    lifecycle_at(corp, expiry - timedelta(days=40))  # no threshold reached yet
    assert notices(smtp_server, "alice@example.com") == []

    lifecycle_at(corp, expiry - timedelta(days=20))
    [text] = notices(smtp_server, "alice@example.com")
    assert show_serial(alice) in text and "30 day(s) or less" in text
    (token,) = LINK_RE.findall(text)
    instance = Instance.open(corp)
    try:
        assert peek(instance.db, token).mail == "alice@example.com"  # a live one-time link
    finally:
        instance.close()
    assert len(notices(smtp_server, "bob@example.com")) == 1
    [summary] = [m for m in smtp_server.messages if OFFICER in m.rcpt_tos]
    assert "expiring in the next 30 days: 2" in summary["Subject"]
    assert show_serial(alice) in summary.text and show_serial(bob) in summary.text

    lifecycle_at(corp, expiry - timedelta(days=20) + timedelta(seconds=30))  # nothing new
    assert len(notices(smtp_server, "alice@example.com")) == 1
    assert len([m for m in smtp_server.messages if OFFICER in m.rcpt_tos]) == 1

    # Bob renews: no more notices for his old certificate. (With the clock moved, his
    # new one - issued today, a few seconds younger - is noticed in its own right.)
    renewed = ok(mailpki("renew", "--home", corp, "--email", "bob@example.com", "--out",
                         tmp_path / "bob-new.p12", "--password-file", tmp_path / "pw"))  # fmt: skip
    bob_new = show_serial(int(renewed.out.split("certificate ")[1].split(" ")[0], 16))

    # Two nodes at the same moment, 5 days before: one 7-day notice, not two.
    def node() -> None:
        lifecycle_at(corp, expiry - timedelta(days=5))

    threads = [threading.Thread(target=node) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = notices(smtp_server, "alice@example.com")
    assert len(texts) == 2 and "7 day(s) or less" in texts[1]
    bob_texts = notices(smtp_server, "bob@example.com")
    assert len(bob_texts) == 2 and bob_new in bob_texts[1] and show_serial(bob) not in bob_texts[1]
    assert len([m for m in smtp_server.messages if OFFICER in m.rcpt_tos]) == 2  # a new day

    lifecycle_at(corp, expiry - timedelta(hours=12))
    texts = notices(smtp_server, "alice@example.com")
    assert len(texts) == 3 and "1 day(s) or less" in texts[2]
    lifecycle_at(corp, expiry - timedelta(hours=11))
    assert len(notices(smtp_server, "alice@example.com")) == 3


def short_profile(home: Path) -> None:
    """An override of the default profile whose certificates live 20 days."""
    packaged = resources.files("mailpki.policy").joinpath("profiles", "sponsored-multipurpose.toml")
    text = packaged.read_text("utf-8")
    text = re.sub(r"(?m)^validity_days = \d+$", "validity_days = 20", text)
    (home / "profiles" / "sponsored-multipurpose.toml").write_text(text)


def test_lifecycle_run_cli_notices_a_certificate_that_really_expires_soon(
    corp: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    short_profile(corp)
    serial = enroll(corp, tmp_path, "alice@example.com", "Alice Archer")
    assert not_after(corp, serial) < datetime.now(UTC) + timedelta(days=21)
    listed = ok(mailpki("certs", "expiring", "--home", corp)).out  # default: 30 days
    assert show_serial(serial) in listed and "\tno\n" in listed

    result = ok(mailpki("lifecycle", "run", "--home", corp))
    assert f"expiry notice (30 days) to alice@example.com for {show_serial(serial)}" in result.out
    assert f"daily summary sent to {OFFICER}" in result.out
    assert len(notices(smtp_server, "alice@example.com")) == 1

    again = ok(mailpki("lifecycle", "run", "--home", corp))
    assert "0 notices, no summary" in again.out
    assert len(notices(smtp_server, "alice@example.com")) == 1


def test_serve_housekeeping_runs_the_lifecycle_on_two_nodes_without_duplicates(
    corp: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    short_profile(corp)
    serial = enroll(corp, tmp_path, "alice@example.com", "Alice Archer")
    nodes = [Instance.open(corp), Instance.open(corp)]
    try:
        chores = [Housekeeping(node) for node in nodes]
        threads = [threading.Thread(target=c.run_once) for c in chores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for c in chores:
            c.run_once()  # within the hour: the lifecycle does not run again
    finally:
        for node in nodes:
            node.close()
    [text] = notices(smtp_server, "alice@example.com")
    assert show_serial(serial) in text
    assert len([m for m in smtp_server.messages if OFFICER in m.rcpt_tos]) == 1
