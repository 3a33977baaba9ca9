"""Leavers in the embedded directory, on SQLite and PostgreSQL: `enabled=false` in an
import, a person left out of a full re-import; lifecycle.on_leave keep and revoke; the
max_leavers guard; a full import from a file with a bad record removes nobody."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from mailpki.instance.instance import Instance
from mailpki.store.models import CertificateRecord, EmbeddedEntry, OutboxMessage
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

OFFICER = "officer@example.com"
HEADER = "login,mail,name,enabled\n"
EVERYONE = {
    "alice": "alice,alice@example.com,Alice Archer,true\n",
    "bob": "bob,bob@example.com,Bob Baker,true\n",
    "carol": "carol,carol@example.com,Carol Cook,true\n",
}


def ok(result):  # type: ignore[no-untyped-def]
    assert result.code == 0, (result.out, result.err)
    return result


def state(home: Path) -> dict[str, tuple[str, str | None]]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            return {
                str(email): (status, reason)
                for email, status, reason in session.execute(
                    select(
                        CertificateRecord.email,
                        CertificateRecord.status,
                        CertificateRecord.revocation_reason,
                    ).where(CertificateRecord.email.is_not(None))
                )
            }
    finally:
        instance.close()


def officer_mail(home: Path) -> list[str]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            return list(
                session.scalars(
                    select(OutboxMessage.subject)
                    .where(OutboxMessage.recipient == OFFICER)
                    .order_by(OutboxMessage.id)
                )
            )
    finally:
        instance.close()


def test_embedded_leavers_keep_guard_and_revoke(home: Path, tmp_path: Path) -> None:
    for key, value in (
        ("keymanager.key_type", "p256"),
        ("keymanager.pool_size", "0"),
        ("lifecycle.officers", OFFICER),
    ):
        ok(mailpki("config", "set", "--home", home, key, value))
    people = tmp_path / "people.csv"
    people.write_text(HEADER + "".join(EVERYONE.values()))
    ok(mailpki("directory", "import", "--home", home, people))
    (tmp_path / "pw").write_text("embedded-leaver-pw-1\n")
    # dave has a certificate but was never in the directory: not a leaver.
    for login, name in (("alice", "Alice Archer"), ("bob", "Bob Baker"),
                        ("carol", "Carol Cook"), ("dave", "Dave Dyer")):  # fmt: skip
        ok(
            mailpki(
                "enroll",
                "--home",
                home,
                "--email",
                f"{login}@example.com",
                "--name",
                name,
                "--out",
                tmp_path / f"{login}.p12",
                "--password-file",
                tmp_path / "pw",
            )
        )
    ok(mailpki("lifecycle", "run", "--home", home))  # everyone seen
    assert {s for s, _ in state(home).values()} == {"valid"}

    # A full re-import from a file with a bad record removes nobody.
    broken = tmp_path / "broken.csv"
    broken.write_text(HEADER + EVERYONE["alice"] + "bad login!,x,y,true\n")
    result = mailpki("directory", "import", "--home", home, broken, "--full")
    assert result.code != 0 and "no bad records" in result.err
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            assert len(session.scalars(select(EmbeddedEntry)).all()) == 3
    finally:
        instance.close()

    # bob is disabled, carol is left out of the full re-import.
    people.write_text(HEADER + EVERYONE["alice"] + "bob,bob@example.com,Bob Baker,false\n")
    assert "1 removed" in ok(mailpki("directory", "import", "--home", home, people, "--full")).out

    # More leavers than lifecycle.max_leavers: held, nothing revoked, officers told once.
    ok(mailpki("config", "set", "--home", home, "lifecycle.max_leavers", "1"))
    result = mailpki("lifecycle", "run", "--home", home)
    assert result.code == 1 and "more than lifecycle.max_leavers (1)" in result.out
    assert {s for s, _ in state(home).values()} == {"valid"}
    mailpki("lifecycle", "run", "--home", home)
    assert officer_mail(home) == ["Leaver check held: 2 leavers at once"]

    # keep: the officers are told (once per person), nothing is revoked.
    ok(mailpki("config", "set", "--home", home, "lifecycle.max_leavers", "50"))
    ok(mailpki("config", "set", "--home", home, "lifecycle.on_leave", "keep"))
    result = ok(mailpki("lifecycle", "run", "--home", home))
    assert "bob@example.com: disabled in the directory" in result.out
    assert "carol@example.com: gone from the directory" in result.out
    assert {s for s, _ in state(home).values()} == {"valid"}
    ok(mailpki("lifecycle", "run", "--home", home))
    assert officer_mail(home)[1:] == [
        "Leaver: bob@example.com (kept (not revoked))",
        "Leaver: carol@example.com (kept (not revoked))",
    ]

    # revoke (the default): affiliationChanged; alice and dave keep theirs.
    ok(mailpki("config", "set", "--home", home, "lifecycle.on_leave", "revoke"))
    ok(mailpki("lifecycle", "run", "--home", home))
    final = state(home)
    assert final["bob@example.com"] == ("revoked", "affiliation_changed")
    assert final["carol@example.com"] == ("revoked", "affiliation_changed")
    assert final["alice@example.com"][0] == final["dave@example.com"][0] == "valid"
    # Already told under keep: no second leaver mail for the same person.
    assert len(officer_mail(home)) == 3


def test_lifecycle_config_refuses_bad_values(home: Path) -> None:
    for key, value, message in (
        ("lifecycle.notice_days", "30,-7", "whole days"),
        ("lifecycle.notice_days", "30,30", "distinct"),
        ("lifecycle.notice_days", "0", "between 1 and 365"),
        ("lifecycle.on_leave", "delete", "revoke, keep"),
        ("lifecycle.officers", "not a mail", "not a mail address"),
        ("lifecycle.renew_window_days", "0", "between 1 and 365"),
    ):
        result = mailpki("config", "set", "--home", home, key, value)
        assert result.code != 0 and message in result.err, (key, value, result.err)
    ok(mailpki("config", "set", "--home", home, "lifecycle.notice_days", "7, 30,1"))
    assert "30,7,1" in ok(mailpki("config", "get", "--home", home, "lifecycle.notice_days")).out
