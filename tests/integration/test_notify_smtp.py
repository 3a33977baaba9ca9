"""Outbox delivery through a real SMTP server (aiosmtpd): content, login, outages."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailpki.notify import MailSettings, SMTPTransport, deliver_pending, pending_count, queue
from mailpki.store.db import Database
from mailpki.store.models import OutboxMessage
from tests.fixtures.smtp import SMTPServer, SMTPServerFactory

pytestmark = pytest.mark.integration

SENDER = "pki@example.com"
PASSWORD = "c0rrect-h0rse-battery"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    database.migrate()
    yield database
    database.dispose()


def smtp_settings(server: SMTPServer, **extra: object) -> MailSettings:
    return MailSettings(
        transport="smtp",
        sender=SENDER,
        smtp_host=server.host,
        smtp_port=server.port,
        timeout=5.0,
        **extra,  # type: ignore[arg-type]
    )


def enqueue(db: Database, *recipients: str, subject: str = "Notice", body: str = "Hi\n") -> None:
    with db.transaction() as session:
        for to in recipients:
            queue(session, kind="cert.issued", to=to, subject=subject, body=body)


def outbox(db: Database) -> list[OutboxMessage]:
    with db.session() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_messages_are_delivered(db: Database, smtp_server: SMTPServer) -> None:
    body = "Grüße aus Köln — your S/MIME certificate is ready. 証明書\n" + "long line " * 40 + "\n"
    enqueue(db, "alice@example.com", "bob@example.org", subject="Zertifikat für dich", body=body)
    report = deliver_pending(db, smtp_settings(smtp_server))
    assert (report.sent, report.failed, report.errors) == (2, 0, [])
    assert pending_count(db) == 0
    assert [m.rcpt_tos for m in smtp_server.messages] == [
        ["alice@example.com"],
        ["bob@example.org"],
    ]
    for mail, to in zip(
        smtp_server.messages, ["alice@example.com", "bob@example.org"], strict=True
    ):
        assert mail.mail_from == SENDER
        assert mail["From"] == SENDER
        assert mail["To"] == to
        assert mail["Subject"] == "Zertifikat für dich"
        assert mail["Message-ID"].endswith("@example.com>")
        assert mail["Date"] is not None
        assert mail.text == body
        assert mail.login is None


def test_login_succeeds(db: Database, smtp_server_factory: SMTPServerFactory) -> None:
    server = smtp_server_factory(users={"alice": PASSWORD})
    enqueue(db, "carol@example.com")
    report = deliver_pending(db, smtp_settings(server, username="alice", password=PASSWORD))
    assert (report.sent, report.failed) == (1, 0)
    (mail,) = server.messages
    assert mail.login == "alice"
    assert mail.rcpt_tos == ["carol@example.com"]
    assert [a.success for a in server.auth_attempts] == [True]


def test_wrong_password_is_recorded_without_the_password(
    db: Database, smtp_server_factory: SMTPServerFactory
) -> None:
    server = smtp_server_factory(users={"alice": PASSWORD})
    wrong = "wr0ng-pa55word-xyz"
    enqueue(db, "carol@example.com", "dave@example.com")
    report = deliver_pending(db, smtp_settings(server, username="alice", password=wrong))
    # A refused login is a transport failure: the run stops after the first message.
    assert (report.sent, report.failed, report.skipped) == (0, 1, 1)
    assert server.messages == []
    assert server.auth_attempts and not any(a.success for a in server.auth_attempts)
    first, second = outbox(db)
    assert first.sent_at is None and first.attempts == 1
    assert first.last_error is not None
    assert "logging in to" in first.last_error and "535" in first.last_error
    assert "\n" not in first.last_error
    assert second.attempts == 0 and second.last_error is None
    text = " ".join([*report.errors, first.last_error, repr(report)])
    assert wrong not in text and PASSWORD not in text
    # With the right password the same rows go out.
    retry = deliver_pending(db, smtp_settings(server, username="alice", password=PASSWORD))
    assert retry.sent == 2
    assert pending_count(db) == 0


def test_server_down_keeps_rows_queued_until_it_is_up(
    db: Database, smtp_server: SMTPServer
) -> None:
    smtp_server.stop()
    enqueue(db, "alice@example.com", "bob@example.com", "carol@example.com")
    report = deliver_pending(db, smtp_settings(smtp_server))
    assert report.sent == 0
    assert report.failed >= 1
    assert report.failed + report.skipped == 3
    assert "connecting to" in report.errors[0]
    assert pending_count(db) == 3
    assert outbox(db)[0].last_error is not None

    smtp_server.start()
    later = deliver_pending(db, smtp_settings(smtp_server))
    assert (later.sent, later.failed) == (3, 0)
    assert pending_count(db) == 0
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]


def test_refused_recipient_fails_only_that_message(db: Database, smtp_server: SMTPServer) -> None:
    smtp_server.reject_recipients.add("nobody@example.com")
    enqueue(db, "nobody@example.com", "alice@example.com")
    report = deliver_pending(db, smtp_settings(smtp_server))
    # The server answered: a per-message failure, and the next message still goes out.
    assert (report.sent, report.failed, report.skipped) == (1, 1, 0)
    assert "550" in report.errors[0] and "nobody@example.com" in report.errors[0]
    assert [m.rcpt_tos for m in smtp_server.messages] == [["alice@example.com"]]
    refused, sent = outbox(db)
    assert refused.sent_at is None and refused.attempts == 1
    assert sent.sent_at is not None


def test_transport_reuses_one_connection(smtp_server: SMTPServer, db: Database) -> None:
    enqueue(db, "a@example.com", "b@example.com")
    with SMTPTransport(smtp_settings(smtp_server)) as transport:
        report = deliver_pending(db, smtp_settings(smtp_server), transport=transport)
        assert report.sent == 2
    first, second = smtp_server.messages
    assert first.peer is not None and first.peer == second.peer


def test_starttls_not_offered_is_a_transport_failure(db: Database, smtp_server: SMTPServer) -> None:
    enqueue(db, "a@example.com", "b@example.com")
    report = deliver_pending(db, smtp_settings(smtp_server, starttls=True))
    assert (report.sent, report.failed, report.skipped) == (0, 1, 1)
    assert "STARTTLS" in report.errors[0]
    assert smtp_server.messages == []


def test_silent_server_times_out(db: Database) -> None:
    # Accepts TCP (kernel backlog) but never greets: the client must give up on time.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        settings = MailSettings(
            transport="smtp", sender=SENDER, smtp_host="127.0.0.1", smtp_port=port, timeout=0.5
        )
        enqueue(db, "a@example.com")
        started = time.monotonic()
        report = deliver_pending(db, settings)
        assert time.monotonic() - started < 5
    assert report.failed == 1
    assert "timed out" in report.errors[0]
    assert pending_count(db) == 1
