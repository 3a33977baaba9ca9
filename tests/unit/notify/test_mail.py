"""The outbox: queue validation, the folder transport, and delivery bookkeeping."""

from __future__ import annotations

import email
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import select

from mailpki.errors import ConfigError, InputError, MailError
from mailpki.notify import (
    DeliveryReport,
    FolderTransport,
    MailSettings,
    SMTPTransport,
    TransportUnavailable,
    build_message,
    deliver_pending,
    pending_count,
    queue,
    transport_for,
)
from mailpki.store.db import Database
from mailpki.store.models import OutboxMessage

SENDER = "pki@example.com"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
def settings(outdir: Path) -> MailSettings:
    return MailSettings(transport="folder", sender=SENDER, folder=outdir)


def enqueue(db: Database, n: int = 1, **overrides: str) -> list[int]:
    ids = []
    base = datetime(2025, 1, 1, tzinfo=UTC)
    with db.transaction() as session:
        for i in range(n):
            fields = {
                "kind": "cert.issued",
                "to": f"user{i}@example.com",
                "subject": f"Your certificate {i}",
                "body": f"Hello {i}\n",
            } | overrides
            row = queue(session, now=base + timedelta(minutes=i), **fields)
            ids.append(row.id)
    return ids


def rows(db: Database) -> list[OutboxMessage]:
    with db.session() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def parse(path: Path) -> EmailMessage:
    return cast(EmailMessage, email.message_from_bytes(path.read_bytes(), policy=policy.default))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> None:
        self.sent.append(message)


class Failing:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    def send(self, message: EmailMessage) -> None:
        self.calls += 1
        raise self.exc


# -- queue -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "to",
    [
        "a@b.com\r\nBcc: x@y.com",
        "a@b.com\nBcc: x@y.com",
        "a@b.com, c@d.com",
        "a@b.com,c@d.com",
        "<a@b.com>",
        "Alice <a@b.com>",
        "",
        "no-at-sign",
        "a@b@c.com",
        "a b@c.com",
        '"a"@b.com',
        "a@",
        "@b.com",
        "a@-b.com",
        "a" * 65 + "@b.com",
    ],
)
def test_queue_refuses_bad_recipients(db: Database, to: str) -> None:
    with pytest.raises(InputError), db.transaction() as session:
        queue(session, kind="cert.issued", to=to, subject="s", body="b")
    assert pending_count(db) == 0


@pytest.mark.parametrize(
    "subject",
    ["Hi\r\nBcc: x@y.com", "Hi\nthere", "Hi\rthere", "Hi\u2028there", "x" * 201, "", "   "],
)
def test_queue_refuses_bad_subjects(db: Database, subject: str) -> None:
    with pytest.raises(InputError), db.transaction() as session:
        queue(session, kind="cert.issued", to="a@b.com", subject=subject, body="b")
    assert pending_count(db) == 0


@pytest.mark.parametrize("kind", ["", "Cert", "1cert", "cert_issued", "c" * 33, "cert issued"])
def test_queue_refuses_bad_kinds(db: Database, kind: str) -> None:
    with pytest.raises(InputError), db.transaction() as session:
        queue(session, kind=kind, to="a@b.com", subject="s", body="b")
    assert pending_count(db) == 0


def test_queue_refuses_naive_time(db: Database) -> None:
    with pytest.raises(InputError), db.transaction() as session:
        queue(session, kind="k", to="a@b.com", subject="s", body="b", now=datetime(2025, 1, 1))


def test_queue_accepts_edge_values_and_does_not_send(db: Database) -> None:
    with db.transaction() as session:
        row = queue(
            session,
            kind="k" + "a" * 31,
            to="first.last+tag@mail.example-corp.co.uk",
            subject="é" * 200,
            body="",
        )
        assert row.id is not None
    (stored,) = rows(db)
    assert stored.sent_at is None
    assert stored.attempts == 0
    assert stored.last_error is None
    assert pending_count(db) == 1


def test_queue_rolls_back_with_the_callers_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        queue(session, kind="cert.issued", to="a@b.com", subject="s", body="b")
        raise RuntimeError("the event failed")
    assert pending_count(db) == 0


# -- messages and the folder transport -------------------------------------------------


def test_build_message_headers_and_body(db: Database) -> None:
    enqueue(db, subject="Zertifikat für Jürgen", body="Grüße, 証明書\n")
    (row,) = rows(db)
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    message = build_message(row, SENDER, now=now)
    again = cast(EmailMessage, email.message_from_bytes(message.as_bytes(), policy=policy.default))
    assert again["From"] == SENDER
    assert again["To"] == "user0@example.com"
    assert again["Subject"] == "Zertifikat für Jürgen"
    assert again["Date"].datetime == now
    assert again["Message-ID"].endswith("@example.com>")
    assert again["Auto-Submitted"] == "auto-generated"
    assert again.get_content_type() == "text/plain"
    assert again.get_content_charset() == "utf-8"
    assert again.get_content() == "Grüße, 証明書\n"
    assert message.as_bytes().isascii()  # 7-bit clean on the wire


def test_folder_transport_writes_parseable_eml(
    db: Database, settings: MailSettings, outdir: Path
) -> None:
    enqueue(db, 2, body="Dear user,\nyour certificate is ready: ünïcödé.\n")
    report = deliver_pending(db, settings)
    assert report == DeliveryReport(sent=2, failed=0, errors=[])
    files = sorted(outdir.glob("*.eml"))
    assert len(files) == 2
    assert not list(outdir.glob(".*"))  # no temp files left behind
    assert stat.S_IMODE(outdir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    recipients = set()
    for path in files:
        assert path.name[:8].isdigit() and "Z-" in path.name
        message = parse(path)
        assert message["From"] == SENDER
        assert message["Subject"].startswith("Your certificate ")
        assert message.get_content() == "Dear user,\nyour certificate is ready: ünïcödé.\n"
        recipients.add(str(message["To"]))
    assert recipients == {"user0@example.com", "user1@example.com"}


def test_folder_transport_unwritable_is_transport_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    message = EmailMessage()
    message["Message-ID"] = "<1.2@example.com>"
    message.set_content("x")
    with pytest.raises(TransportUnavailable, match="cannot write mail"):
        FolderTransport(blocker / "mail").send(message)


def test_transport_for(settings: MailSettings, outdir: Path) -> None:
    folder = transport_for(settings)
    assert isinstance(folder, FolderTransport) and folder.folder == outdir
    smtp = transport_for(MailSettings(transport="smtp", sender=SENDER, smtp_host="mx"))
    assert isinstance(smtp, SMTPTransport)


# -- delivery --------------------------------------------------------------------------


def test_deliver_marks_sent_and_is_idempotent(db: Database, settings: MailSettings) -> None:
    enqueue(db, 3)
    recorder = Recorder()
    first = deliver_pending(db, settings, transport=recorder)
    assert (first.sent, first.failed, first.errors) == (3, 0, [])
    # Oldest first.
    assert [str(m["To"]) for m in recorder.sent] == [f"user{i}@example.com" for i in range(3)]
    assert all(r.sent_at is not None and r.attempts == 1 for r in rows(db))
    assert pending_count(db) == 0
    second = deliver_pending(db, settings, transport=recorder)
    assert (second.sent, second.failed) == (0, 0)
    assert len(recorder.sent) == 3


def test_deliver_respects_limit(db: Database, settings: MailSettings) -> None:
    enqueue(db, 5)
    recorder = Recorder()
    assert deliver_pending(db, settings, limit=2, transport=recorder).sent == 2
    assert pending_count(db) == 3
    assert [str(m["To"]) for m in recorder.sent] == ["user0@example.com", "user1@example.com"]
    with pytest.raises(InputError):
        deliver_pending(db, settings, limit=0, transport=recorder)


def test_failing_transport_leaves_rows_unsent(db: Database, settings: MailSettings) -> None:
    enqueue(db, 2)
    failing = Failing(MailError("relay refused the message: 554 no"))
    report = deliver_pending(db, settings, transport=failing)
    # A per-message failure does not stop the run: both were tried.
    assert (report.sent, report.failed, report.skipped) == (0, 2, 0)
    assert failing.calls == 2
    assert len(report.errors) == 2 and "554 no" in report.errors[0]
    for row in rows(db):
        assert row.sent_at is None
        assert row.attempts == 1
        assert row.last_error == "relay refused the message: 554 no"
    assert pending_count(db) == 2
    # Later it works: sent, and attempts counts both tries.
    assert deliver_pending(db, settings, transport=Recorder()).sent == 2
    assert all(r.sent_at is not None and r.attempts == 2 for r in rows(db))


def test_transport_failure_stops_the_run(db: Database, settings: MailSettings) -> None:
    enqueue(db, 3)
    failing = Failing(TransportUnavailable("connecting to SMTP server mx:25: refused"))
    report = deliver_pending(db, settings, transport=failing)
    assert (report.sent, report.failed, report.skipped) == (0, 1, 2)
    assert failing.calls == 1
    assert [r.attempts for r in rows(db)] == [1, 0, 0]
    assert pending_count(db) == 3


def test_unexpected_transport_bug_is_reported_not_raised(
    db: Database, settings: MailSettings
) -> None:
    enqueue(db)
    report = deliver_pending(db, settings, transport=Failing(RuntimeError("oops")))
    assert report.failed == 1
    assert rows(db)[0].last_error == "RuntimeError: oops"


def test_password_is_redacted_from_transport_errors(db: Database) -> None:
    enqueue(db)
    smtp = MailSettings(
        transport="smtp", sender=SENDER, smtp_host="mx", username="u", password="hunter2"
    )
    report = deliver_pending(db, smtp, transport=Failing(RuntimeError("bad pw hunter2")))
    assert "hunter2" not in " ".join(report.errors)
    assert "hunter2" not in (rows(db)[0].last_error or "")


def test_pending_count_empty(db: Database) -> None:
    assert pending_count(db) == 0
    assert deliver_pending(db, MailSettings(transport="smtp", sender=SENDER, smtp_host="x")) == (
        DeliveryReport()
    )


# -- settings --------------------------------------------------------------------------


def test_settings_valid(tmp_path: Path) -> None:
    MailSettings(transport="folder", sender=SENDER, folder=tmp_path)
    s = MailSettings(
        transport="smtp", sender=SENDER, smtp_host="mx", username="u", password="hunter2"
    )
    assert "hunter2" not in repr(s)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"transport": "folder", "sender": SENDER},
        {"transport": "smtp", "sender": SENDER},
        {"transport": "smtp", "sender": SENDER, "smtp_host": "  "},
        {"transport": "smtp", "sender": "PKI <pki@example.com>", "smtp_host": "mx"},
        {"transport": "smtp", "sender": "pki@example.com\r\nBcc: x@y.com", "smtp_host": "mx"},
        {"transport": "smtp", "sender": "nobody", "smtp_host": "mx"},
        {"transport": "smtp", "sender": SENDER, "smtp_host": "mx", "smtp_port": 0},
        {"transport": "smtp", "sender": SENDER, "smtp_host": "mx", "password": "p"},
        {"transport": "smtp", "sender": SENDER, "smtp_host": "mx", "timeout": 0},
        {"transport": "carrier-pigeon", "sender": SENDER},
    ],
)
def test_settings_invalid(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MailSettings(**kwargs)  # type: ignore[arg-type]


def test_a_row_without_html_stays_single_part_plain_text(db: Database) -> None:
    enqueue(db, 1)
    [row] = rows(db)
    assert row.html_body is None
    message = build_message(row, "pki@example.com")
    assert message.get_content_type() == "text/plain"


def test_queue_refuses_a_non_text_html_alternative(db: Database) -> None:
    with db.transaction() as session, pytest.raises(InputError):
        queue(session, kind="notice", to="a@example.com", subject="s", body="b", html=b"<p>")  # type: ignore[arg-type]
    assert rows(db) == []
