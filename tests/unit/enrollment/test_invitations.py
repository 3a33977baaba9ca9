"""Enrollment invitations: hashed one-time tokens, expiry, resend, reminders, templates."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
from sqlalchemy import select

from mailpki.audit import AuditLog
from mailpki.audit.log import genesis
from mailpki.directory.entry import DirectoryEntry
from mailpki.enrollment import invitations
from mailpki.enrollment.invitations import (
    InvitationExpired,
    InvitationInvalid,
    InvitationSuperseded,
    InvitationUsed,
    hash_token,
    invite,
    load_template,
    redeem,
    remind,
)
from mailpki.errors import InputError
from mailpki.store.db import Database
from mailpki.store.models import AuditRecord, Invitation, OutboxMessage

BASE = "https://pki.example.com"
LINK_RE = re.compile(re.escape(BASE) + r"/enroll/([A-Za-z0-9_-]+)")
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    database.migrate()
    with database.transaction() as session:
        genesis(session)
    yield database
    database.dispose()


@pytest.fixture
def audit() -> AuditLog:
    return AuditLog(signer=None)


def person(login: str, **kw: object) -> DirectoryEntry:
    values: dict[str, object] = {"mail": f"{login}@example.com", "display_name": login.title()}
    values.update(kw)
    return DirectoryEntry(directory="embedded", dn=f"uid={login}", login=login, **values)  # type: ignore[arg-type]


def send(db: Database, audit: AuditLog, *entries: DirectoryEntry, **kw: object) -> object:
    return invite(
        db,
        audit,
        list(entries),
        base_url=BASE,
        validity=timedelta(days=14),
        actor="test",
        org="Example Corp",
        now=kw.pop("now", T0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def mails(db: Database) -> list[OutboxMessage]:
    with db.session() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def tokens(db: Database) -> list[str]:
    return [m for row in mails(db) for m in LINK_RE.findall(row.body)]


def test_invite_stores_only_the_hash_and_mails_the_link(db: Database, audit: AuditLog) -> None:
    report = send(db, audit, person("alice"), person("bob"))
    assert report.sent == ["alice", "bob"]  # type: ignore[attr-defined]
    sent = mails(db)
    assert [m.recipient for m in sent] == ["alice@example.com", "bob@example.com"]
    assert "Alice" in sent[0].body and "Example Corp" in sent[0].body
    assert "2026-01-24 09:00 UTC" in sent[0].body
    found = tokens(db)
    assert len(found) == 2 and all(len(t) == 43 for t in found)
    with db.session() as session:
        rows = list(session.scalars(select(Invitation).order_by(Invitation.id)))
        records = list(session.scalars(select(AuditRecord)))
        dump = " ".join(
            str(getattr(r, c.name)) for r in rows for c in Invitation.__table__.columns
        ) + " ".join(r.data for r in records)
    assert [r.token_sha256 for r in rows] == [hash_token(t) for t in found]
    for token in found:
        assert token not in dump
    assert [r.event for r in records] == ["invitation.sent", "invitation.sent"]
    assert '"alice@example.com"' in records[0].data


def test_redeem_once(db: Database, audit: AuditLog) -> None:
    send(db, audit, person("alice"))
    (token,) = tokens(db)
    used = redeem(db, token, now=T0 + timedelta(days=1))
    assert used.login == "alice" and used.mail == "alice@example.com"
    assert used.used_at is not None
    with pytest.raises(InvitationUsed, match="already used"):
        redeem(db, token, now=T0 + timedelta(days=1))


def test_forged_token_refused(db: Database, audit: AuditLog) -> None:
    send(db, audit, person("alice"))
    with pytest.raises(InvitationInvalid, match="not valid"):
        redeem(db, secrets.token_urlsafe(32), now=T0)


def test_expired_token_refused(db: Database, audit: AuditLog) -> None:
    send(db, audit, person("alice"))
    (token,) = tokens(db)
    with pytest.raises(InvitationExpired, match="expired: ask for a new one"):
        redeem(db, token, now=T0 + timedelta(days=14))
    assert redeem(db, token, now=T0 + timedelta(days=13, hours=23)).login == "alice"


@pytest.mark.parametrize(
    "token",
    ["", "short", "a" * 42, "a" * 44, "a" * 42 + "=", "a" * 42 + "/", "../" + "a" * 40,
     "a" * 42 + "\n", "ä" * 43, "a" * 10_000],
)  # fmt: skip
def test_malformed_tokens_refused_before_lookup(db: Database, token: str) -> None:
    with (
        mock.patch.object(invitations, "hash_token", side_effect=AssertionError("hashed")),
        mock.patch.object(db, "transaction", side_effect=AssertionError("looked up")),
        pytest.raises(InvitationInvalid, match="not valid"),
    ):
        redeem(db, token)


def test_non_string_token_refused(db: Database) -> None:
    with pytest.raises(InvitationInvalid):
        redeem(db, None)  # type: ignore[arg-type]


def test_already_invited_is_skipped_and_resend_revokes(db: Database, audit: AuditLog) -> None:
    send(db, audit, person("alice"))
    again = send(db, audit, person("alice"), now=T0 + timedelta(hours=1))
    assert again.sent == [] and "already invited" in again.skipped[0]  # type: ignore[attr-defined]
    assert "--resend" in again.skipped[0]  # type: ignore[attr-defined]
    resent = send(db, audit, person("alice"), now=T0 + timedelta(hours=2), resend=True)
    assert resent.sent == ["alice"]  # type: ignore[attr-defined]
    old, new = tokens(db)
    with pytest.raises(InvitationSuperseded, match="replaced by a newer one"):
        redeem(db, old, now=T0 + timedelta(hours=3))
    assert redeem(db, new, now=T0 + timedelta(hours=3)).login == "alice"


def test_skips_disabled_and_no_mail(db: Database, audit: AuditLog) -> None:
    report = send(
        db, audit, person("carol", enabled=False), person("dave", mail=None), person("eve")
    )
    assert report.sent == ["eve"]  # type: ignore[attr-defined]
    skipped = report.skipped  # type: ignore[attr-defined]
    assert any(s.startswith("carol:") and "disabled" in s for s in skipped)
    assert any(s.startswith("dave:") and "no mail" in s for s in skipped)
    assert len(mails(db)) == 1


def test_remind_issues_new_token_and_revokes_old(db: Database, audit: AuditLog) -> None:
    send(db, audit, person("alice"), person("bob"))
    alice_token, bob_token = tokens(db)
    redeem(db, bob_token, now=T0 + timedelta(days=1))  # bob is done: no reminder
    # Too early: nothing.
    assert remind(db, audit, older_than=timedelta(days=5), base_url=BASE,
                  now=T0 + timedelta(days=4)) == 0  # fmt: skip
    later = T0 + timedelta(days=6)
    assert remind(db, audit, older_than=timedelta(days=5), base_url=BASE, now=later) == 1
    # Only one reminder, ever.
    assert remind(db, audit, older_than=timedelta(days=5), base_url=BASE,
                  now=later + timedelta(days=6)) == 0  # fmt: skip
    sent = mails(db)
    assert sent[-1].recipient == "alice@example.com" and sent[-1].kind == "invitation.reminder"
    new_token = LINK_RE.findall(sent[-1].body)[0]
    assert new_token != alice_token
    assert "2026-01-24 09:00 UTC" in sent[-1].body  # the original expiry is kept
    with pytest.raises(InvitationSuperseded):
        redeem(db, alice_token, now=later)
    assert redeem(db, new_token, now=later).login == "alice"


def test_remind_skips_expired(db: Database, audit: AuditLog) -> None:
    send(db, audit, person("alice"))
    assert remind(db, audit, older_than=timedelta(days=5), base_url=BASE,
                  now=T0 + timedelta(days=20)) == 0  # fmt: skip


def test_theme_overrides_template(db: Database, audit: AuditLog, tmp_path: Path) -> None:
    theme = tmp_path / "theme"
    theme.mkdir()
    (theme / "invitation.txt").write_text("Hi $name of $org: $link (until $expires)\n")
    send(db, audit, person("alice"), theme=theme)
    body = mails(db)[0].body
    assert body.startswith("Hi Alice of Example Corp: https://pki.example.com/enroll/")
    # reminder.txt is not overridden: the built-in one is used.
    assert "reminder" in load_template("reminder.txt", theme).template.lower()


def test_theme_with_unknown_placeholder_is_an_error(
    db: Database, audit: AuditLog, tmp_path: Path
) -> None:
    theme = tmp_path / "theme"
    theme.mkdir()
    (theme / "invitation.txt").write_text("Hi $nobody\n")
    report = send(db, audit, person("alice"), theme=theme)
    assert report.sent == [] and "placeholder" in report.errors[0]  # type: ignore[attr-defined]
    assert mails(db) == []  # the failed person left nothing behind
    with db.session() as session:
        assert list(session.scalars(select(Invitation))) == []


@pytest.mark.parametrize(
    "name", ["../invitation.txt", "a/invitation.txt", "..", "x\\invitation.txt", "other.txt", ""]
)
def test_template_traversal_names_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="not a mail template name"):
        load_template(name, tmp_path)


def test_builtin_templates_load() -> None:
    for name in invitations.TEMPLATE_NAMES:
        text = load_template(name).template
        assert "$link" in text
        if not name.startswith("revocation."):
            assert "$expires" in text and "$logon" in text


def test_html_alternative_escapes_directory_names(db: Database, audit: AuditLog) -> None:
    from mailpki.notify.mail import build_message

    evil = person("mallory", display_name='<script>alert("x")</script> & Co')
    send(db, audit, evil)
    [row] = mails(db)
    assert row.html_body is not None
    assert "<script>" not in row.html_body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in row.html_body
    assert '<script>alert("x")</script>' in row.body  # the text part is plain text
    [token] = LINK_RE.findall(row.body)
    assert f'href="{BASE}/enroll/{token}"' in row.html_body
    message = build_message(row, "pki@example.com")
    assert message.get_content_type() == "multipart/alternative"
    kinds = [part.get_content_type() for part in message.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
