"""The outbox: queue mail in the caller's transaction, deliver it later.

A notice is queued (``queue``) in the same transaction as the event it reports, so the
event and its mail commit or roll back together and a mail server that is down loses
nothing. ``deliver_pending`` sends what is queued through a transport (a folder of
``.eml`` files, or SMTP) and marks each message sent in its own short transaction, so
a crash mid-run resends at most the one message that was in flight.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import smtplib
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailpki.base.files import write_atomically
from mailpki.base.settings import SettingsFile
from mailpki.errors import ConfigError, InputError, MailError
from mailpki.store.db import Database
from mailpki.store.models import OutboxMessage

__all__ = [
    "DeliveryReport",
    "FolderTransport",
    "MailSettings",
    "SMTPTransport",
    "Transport",
    "TransportUnavailable",
    "build_message",
    "deliver_pending",
    "is_plain_address",
    "pending_count",
    "queue",
    "transport_for",
]

# A plain RFC 5321 addr-spec, ASCII only: dot-atom local part, hostname domain. Quoted
# local parts, comments, display names and lists are refused: the address goes into a
# header and an SMTP command, where anything fancier is an injection risk.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
_ADDRESS_MAX = 320  # OutboxMessage.recipient is String(320)
_LOCAL_MAX = 64  # RFC 5321 4.5.3.1.1
_SUBJECT_MAX = 200  # OutboxMessage.subject is String(200)
_KIND_RE = re.compile(r"[a-z][a-z0-9.-]{0,31}")
_ERROR_MAX = 500  # keep last_error and report lines readable


def is_plain_address(value: str) -> bool:
    """True for a plain ``local@domain`` (one ``@``, no display name, no list)."""
    if len(value) > _ADDRESS_MAX or _ADDRESS_RE.fullmatch(value) is None:
        return False
    return len(value.partition("@")[0]) <= _LOCAL_MAX


def _has_line_break_or_control(value: str) -> bool:
    # C0/C1 controls, DEL, and the Unicode line/paragraph separators that
    # str.splitlines() (and so some header code) treats as line ends.
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" for ch in value)


# -- settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class MailSettings:
    """How mail leaves the instance: a folder (tests, air-gapped sites) or SMTP."""

    transport: Literal["folder", "smtp"]
    sender: str
    folder: Path | None = None
    smtp_host: str = ""
    smtp_port: int = 25
    starttls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.transport not in ("folder", "smtp"):
            raise ConfigError(f"mail transport must be 'folder' or 'smtp', not {self.transport!r}")
        if not is_plain_address(self.sender):
            raise ConfigError(
                f"mail sender {self.sender!r} is not a plain address like pki@example.com"
            )
        if self.transport == "folder" and self.folder is None:
            raise ConfigError("mail transport 'folder' needs a folder")
        if self.transport == "smtp":
            if not self.smtp_host.strip():
                raise ConfigError("mail transport 'smtp' needs an SMTP host")
            if not 1 <= self.smtp_port <= 65535:
                raise ConfigError(f"SMTP port {self.smtp_port} is not between 1 and 65535")
            if self.password and not self.username:
                raise ConfigError("an SMTP password is set but no SMTP username")
        if not self.timeout > 0:
            raise ConfigError(f"mail timeout must be positive, not {self.timeout}")


# -- queueing --------------------------------------------------------------------------


def queue(
    session: Session,
    *,
    kind: str,
    to: str,
    subject: str,
    body: str,
    now: datetime | None = None,
    html: str | None = None,
    flush: bool = True,
) -> OutboxMessage:
    """Add a mail to the outbox in the caller's session (the caller commits it).

    `html`, if given, is sent as an alternative to the text `body` (which every mail
    keeps: it is what plain-text clients and screen readers get).

    Nothing is sent here; ``deliver_pending`` does that after the commit.
    """
    if not isinstance(kind, str) or _KIND_RE.fullmatch(kind) is None:
        raise InputError(f"mail kind {kind!r} must match [a-z][a-z0-9.-]{{0,31}}")
    if not isinstance(to, str) or not is_plain_address(to):
        raise InputError(f"mail recipient {to!r} is not a plain address like name@example.com")
    if not isinstance(subject, str) or not subject.strip():
        raise InputError("mail subject is empty")
    if _has_line_break_or_control(subject):
        raise InputError("mail subject must be one line without control characters")
    if len(subject) > _SUBJECT_MAX:
        raise InputError(f"mail subject is {len(subject)} characters; at most {_SUBJECT_MAX}")
    if not isinstance(body, str):
        raise InputError("mail body must be text")
    if html is not None and not isinstance(html, str):
        raise InputError("the HTML alternative must be text")
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise InputError("the queue time must carry a time zone")
    row = OutboxMessage(
        kind=kind,
        recipient=to,
        subject=subject,
        body=body,
        html_body=html,
        created_at=when,
        sent_at=None,
        attempts=0,
        last_error=None,
    )
    session.add(row)
    if flush:  # assign the id now, still inside the caller's transaction (a batch of
        session.flush()  # thousands leaves it to the commit: one multi-row INSERT)
    return row


# -- messages --------------------------------------------------------------------------


def build_message(row: OutboxMessage, sender: str, *, now: datetime | None = None) -> EmailMessage:
    """The RFC 5322 message for an outbox row: plain text, UTF-8 (and, when the row
    has one, an HTML alternative: multipart/alternative).

    ``Date`` is the time of sending, not of queueing: a mail that waited for a dead
    server would otherwise look back-dated to spam filters.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row.recipient
    message["Subject"] = row.subject
    message["Date"] = format_datetime((now or datetime.now(UTC)).astimezone(UTC), usegmt=True)
    message["Message-ID"] = message_id(row, sender)
    # RFC 3834: machine-generated, so vacation responders do not answer it.
    message["Auto-Submitted"] = "auto-generated"
    # Quoted-printable keeps the body 7-bit clean for servers without 8BITMIME.
    message.set_content(row.body, charset="utf-8", cte="quoted-printable")
    if row.html_body:
        message.add_alternative(
            row.html_body, subtype="html", charset="utf-8", cte="quoted-printable"
        )
    return message


def message_id(row: OutboxMessage, sender: str) -> str:
    """The same Message-ID on every attempt of one outbox row: when a delivery is cut after
    the server took the message (and so is tried again), mail systems and people see one
    message twice, not two messages."""
    if row.id is None or row.created_at is None:
        return make_msgid(domain=sender.rpartition("@")[2])
    seed = f"{row.id}|{row.created_at.isoformat()}|{row.recipient}|{row.subject}".encode()
    digest = hashlib.sha256(seed).hexdigest()[:32]
    return f"<{digest}.{row.id}@{sender.rpartition('@')[2] or 'mailpki.invalid'}>"


# -- transports ------------------------------------------------------------------------


class TransportUnavailable(MailError):
    """The transport itself failed (server unreachable, TLS, login, folder unwritable):
    every further message would fail the same way, so a delivery run stops."""


class Transport(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Hand one message over, or raise MailError (it stays queued)."""


class FolderTransport:
    """Writes each message as ``<folder>/<UTC timestamp>-<id>.eml`` (private, atomic)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def send(self, message: EmailMessage) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.folder / f"{stamp}-{_file_id(message)}.eml"
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Notices name people and certificates: readable by the instance only.
            write_atomically(path, message.as_bytes(), private=True)
        except OSError as exc:
            raise TransportUnavailable(
                f"cannot write mail to {self.folder}: {exc.strerror or exc}"
            ) from exc


def _file_id(message: EmailMessage) -> str:
    """A file-name-safe unique part: the Message-ID's left side, else a random id."""
    left = str(message.get("Message-ID", "")).strip().strip("<>").partition("@")[0]
    safe = re.sub(r"[^A-Za-z0-9.-]", "", left)[:80].strip(".")
    return safe or uuid.uuid4().hex


class SMTPTransport:
    """Sends through one SMTP server, reusing the connection across messages.

    Call ``close()`` (or use it as a context manager) when done. Every error becomes a
    one-line MailError that never contains the password.
    """

    def __init__(self, settings: MailSettings) -> None:
        if settings.transport != "smtp":
            raise ConfigError("SMTPTransport needs mail settings with transport 'smtp'")
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SMTPTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def _where(self) -> str:
        return f"SMTP server {self.settings.smtp_host}:{self.settings.smtp_port}"

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        step = "connecting to"
        smtp: smtplib.SMTP | None = None
        try:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout)
            step = "greeting"
            smtp.ehlo()
            if s.starttls:
                step = "STARTTLS with"
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.username:
                step = "logging in to"
                smtp.login(s.username, s.password)
        except (smtplib.SMTPException, OSError) as exc:
            if smtp is not None:
                _close_quietly(smtp)
            raise TransportUnavailable(f"{step} {self._where}: {self._describe(exc)}") from exc
        return smtp

    def send(self, message: EmailMessage) -> None:
        self._hand_over(lambda smtp: smtp.send_message(message))

    def send_raw(self, sender: str, recipients: Sequence[str], data: bytes) -> None:
        """A finished message as bytes (e.g. signed: its bytes must not change), to the
        envelope `recipients`; refused recipients are a MailError naming them."""
        self._hand_over(lambda smtp: smtp.sendmail(sender, list(recipients), data))

    def _hand_over(self, submit: Callable[[smtplib.SMTP], dict[str, Any]]) -> None:
        if self._smtp is not None and not self._alive(self._smtp):
            self._drop()
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            refused = submit(self._smtp)
        except (
            smtplib.SMTPRecipientsRefused,
            smtplib.SMTPSenderRefused,
            smtplib.SMTPDataError,
        ) as exc:
            # The server answered and refused this message; the session is still usable
            # once reset, so the next message may go through.
            self._reset()
            raise MailError(f"{self._where} refused the message: {self._describe(exc)}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise TransportUnavailable(
                f"sending through {self._where}: {self._describe(exc)}"
            ) from exc
        if refused:  # only with several recipients (an outbox mail has one)
            raise MailError(f"{self._where} refused recipients: {', '.join(sorted(refused))}")

    def close(self) -> None:
        """Say QUIT and close the connection (safe to call twice)."""
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                _close_quietly(smtp)

    def _alive(self, smtp: smtplib.SMTP) -> bool:
        # A reused connection may have been closed by the server's idle timeout.
        try:
            return smtp.noop()[0] == 250
        except (smtplib.SMTPException, OSError):
            return False

    def _reset(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            _close_quietly(smtp)

    def _describe(self, exc: BaseException) -> str:
        """One line, no password (not even its AUTH encodings), bounded length."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            text = "; ".join(
                f"{rcpt}: {code} {_decode(reply)}" for rcpt, (code, reply) in exc.recipients.items()
            )
        elif isinstance(exc, smtplib.SMTPResponseException):
            text = f"{exc.smtp_code} {_decode(exc.smtp_error)}"
        elif isinstance(exc, OSError) and exc.strerror:
            text = exc.strerror
        else:
            text = str(exc) or exc.__class__.__name__
        if isinstance(exc, TimeoutError):
            text = f"timed out after {self.settings.timeout:g}s"
        return _one_line(_redact(text, self.settings))


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _redact(text: str, settings: MailSettings) -> str:
    password = settings.password
    if not password:
        return text
    user = settings.username.encode()
    secret = password.encode()
    # What smtplib puts on the wire for PLAIN and LOGIN, should a server echo it back.
    encodings = [
        base64.b64encode(b"\0" + user + b"\0" + secret).decode(),
        base64.b64encode(secret).decode(),
    ]
    for needle in sorted([password, *encodings], key=len, reverse=True):
        text = text.replace(needle, "***")
    return text


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _ERROR_MAX else flat[: _ERROR_MAX - 3] + "..."


def _close_quietly(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        smtp.close()


def transport_for(settings: MailSettings) -> Transport:
    """The transport the settings name."""
    if settings.transport == "folder":
        assert settings.folder is not None  # MailSettings checks it
        return FolderTransport(settings.folder)
    return SMTPTransport(settings)


# -- delivery --------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    """What one delivery run did. ``skipped`` messages were not tried: the transport
    failed as a whole first. They stay queued, like the failed ones."""

    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: int = 0


CLAIM_SECONDS = 120  # longer than one SMTP delivery can take (connect + send timeouts)


def deliver_pending(
    db: Database,
    settings: MailSettings,
    *,
    limit: int = 100,
    transport: Transport | None = None,
) -> DeliveryReport:
    """Send up to ``limit`` queued mails, oldest first, and record the outcome of each.

    A failed send never raises: the row keeps ``sent_at`` empty, its ``attempts`` and
    ``last_error`` are updated, and the report lists the error. StoreError does raise.
    A transport-level failure (TransportUnavailable) ends the run early.
    """
    if limit < 1:
        raise InputError(f"delivery limit must be at least 1, not {limit}")
    report = DeliveryReport()
    with db.session() as session:
        rows = list(
            session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None))
                .order_by(OutboxMessage.created_at, OutboxMessage.id)
                .limit(limit)
            )
        )
    if not rows:
        return report
    own = transport is None
    channel = transport_for(settings) if transport is None else transport
    try:
        for index, row in enumerate(rows):
            if not _claim(db, row.id):
                continue  # another node (or thread) is sending it right now
            try:
                channel.send(build_message(row, settings.sender))
            except Exception as exc:
                # Any failure of one message (including a bug in a custom transport or a
                # row that never went through queue()) must not block the others.
                error = _redact(_error_text(exc), settings)
                _mark_failed(db, row.id, error)
                report.failed += 1
                report.errors.append(f"outbox #{row.id} to {row.recipient}: {error}")
                if isinstance(exc, TransportUnavailable):
                    report.skipped = len(rows) - index - 1
                    break
                continue
            _mark_sent(db, row.id)
            report.sent += 1
    finally:
        if own and isinstance(channel, SMTPTransport):
            channel.close()
    return report


def _error_text(exc: Exception) -> str:
    if isinstance(exc, MailError):
        return _one_line(str(exc))
    return _one_line(f"{exc.__class__.__name__}: {exc}")


def _claim(db: Database, row_id: int) -> bool:
    """Take one unsent mail for `CLAIM_SECONDS`: a conditional UPDATE only one sender can
    win, so two nodes flushing the outbox at once never send the same mail twice. (A node
    that dies between sending and recording it leaves the claim to run out: that mail is
    sent again later, at least once rather than at most once.)"""
    now = datetime.now(UTC)
    with db.transaction() as session:
        result = session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == row_id,
                OutboxMessage.sent_at.is_(None),
                (OutboxMessage.claimed_until.is_(None)) | (OutboxMessage.claimed_until < now),
            )
            .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _mark_sent(db: Database, row_id: int) -> None:
    with db.transaction() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id, OutboxMessage.sent_at.is_(None))
            .values(
                sent_at=datetime.now(UTC),
                attempts=OutboxMessage.attempts + 1,
                claimed_until=None,
            )
        )


def _mark_failed(db: Database, row_id: int, error: str) -> None:
    with db.transaction() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id, OutboxMessage.sent_at.is_(None))
            .values(attempts=OutboxMessage.attempts + 1, last_error=error, claimed_until=None)
        )


def pending_count(db: Database) -> int:
    """How many mails wait in the outbox."""
    with db.session() as session:
        count = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
        )
    return int(count or 0)


OUTBOX_FOLDER = "outbox"


def mail_settings_from(config: SettingsFile, *, default_sender: str) -> MailSettings:
    """MailSettings from the `smtp.*` settings of an instance or recovery service file:
    SMTP when `smtp.host` is set, else each mail is an .eml file in the home's outbox/."""
    get = config.get
    password = ""
    if get("smtp.password_file"):
        path = config.path_of("smtp.password_file")
        try:
            password = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the SMTP password file {path}: {exc}") from None
    host = str(get("smtp.host")).strip()
    return MailSettings(
        transport="smtp" if host else "folder",
        sender=str(get("smtp.from")) or default_sender,
        folder=config.home / OUTBOX_FOLDER,
        smtp_host=host,
        smtp_port=int(get("smtp.port")),
        starttls=get("smtp.starttls") == "true",
        username=str(get("smtp.username")),
        password=password,
    )
