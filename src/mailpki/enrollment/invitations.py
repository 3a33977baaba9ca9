"""Enrollment invitations: signed, expiring, one-time links mailed to people.

A link is ``{base_url}/enroll/{token}`` with a random 32-byte token. Only the token's
SHA-256 is stored, so a copy of the database opens no link; looking a token up by its
hash is what makes the comparison constant-time. The invitation row, its mail (in the
outbox) and its audit record are written in one transaction.

The mail is plain text (the outbox carries a text body only).
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailpki.audit import AuditLog
from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import ConfigError, InputError, MailPKIError
from mailpki.notify.mail import is_plain_address, queue
from mailpki.store.db import Database
from mailpki.store.models import Invitation

__all__ = [
    "TEMPLATE_NAMES",
    "InvitationExpired",
    "InvitationInvalid",
    "InvitationSuperseded",
    "InvitationUsed",
    "InviteReport",
    "check_token",
    "hash_token",
    "invite",
    "load_template",
    "logon_help",
    "new_link",
    "peek",
    "redeem",
    "remind",
    "render_template",
]

TOKEN_BYTES = 32
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet, no padding.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
TEMPLATE_NAMES = (
    "invitation.txt",
    "reminder.txt",
    "invitation.html",
    "reminder.html",
    "revocation.txt",
    "revocation.html",
)
MAX_TEMPLATE_BYTES = 64 * 1024
_ORG_IN_SUBJECT_MAX = 120
INVITE_BATCH = 500  # people invited in one transaction


class InvitationInvalid(InputError):
    """The link's token is malformed or unknown."""


class InvitationExpired(InputError):
    """The invitation is past its expiry."""


class InvitationSuperseded(InputError):
    """A newer invitation (resend or reminder) replaced this one."""


class InvitationUsed(InputError):
    """The invitation was already redeemed."""


@dataclass
class InviteReport:
    """Who was invited (logins), who was skipped and why, and what failed."""

    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- tokens ----------------------------------------------------------------------------


def check_token(token: object) -> str:
    """The token if it has the shape of one of ours; refused before any hashing or lookup."""
    if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
        raise InvitationInvalid("this invitation link is not valid")
    return token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def _link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/enroll/{token}"


def _utc_now(now: datetime | None) -> datetime:
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise InputError("the invitation clock must carry a time zone")
    return when.astimezone(UTC)


# -- templates -------------------------------------------------------------------------


def load_template(name: str, theme: Path | None = None) -> string.Template:
    """A mail template: ``theme/name`` if that file exists, else the built-in one."""
    if "/" in name or "\\" in name or ".." in name or name not in TEMPLATE_NAMES:
        raise InputError(f"{name!r} is not a mail template name ({', '.join(TEMPLATE_NAMES)})")
    if theme is not None:
        path = Path(theme) / name
        if path.is_file():
            try:
                data = path.read_bytes()
                if len(data) > MAX_TEMPLATE_BYTES:
                    raise ConfigError(f"the theme template {path} is larger than 64 KiB")
                return string.Template(data.decode("utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read the theme template {path}: {exc}") from None
    text = resources.files("mailpki.enrollment").joinpath("templates", name).read_text("utf-8")
    return string.Template(text)


def render_template(name: str, theme: Path | None, values: dict[str, str]) -> str:
    """A mail template filled in (values HTML-escaped for the .html ones)."""
    template = load_template(name, theme)
    if name.endswith(".html"):
        # Names come from the directory: `<script>` there must stay text in the mail.
        values = {key: html.escape(value, quote=True) for key, value in values.items()}
    try:
        return template.substitute(values)
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"the mail template {name} has an unknown or malformed placeholder ({exc}); "
            f"known: {', '.join('$' + key for key in values)}"
        ) from None


_LOGON_WAYS = {
    "directory": "with your usual login and password (the ones you use for your computer and mail)",
    "pin": "with your employee id and the one-time PIN that HR gives you (it never comes "
    "in this mail: ask HR if you have none)",
}


def logon_help(methods: Sequence[str]) -> str:
    """How the person logs on after opening the link, for the mail ($logon)."""
    ways = [_LOGON_WAYS[m] for m in methods if m in _LOGON_WAYS]
    if not ways:
        return "The page tells you how to log on."
    return "You log on " + ", or ".join(ways) + "."


def _expires_text(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _subject(org: str, *, reminder: bool) -> str:
    who = " ".join(org.split())[:_ORG_IN_SUBJECT_MAX] or "Your organisation"
    text = f"{who}: get your e-mail certificate"
    return f"Reminder - {text}" if reminder else text


# -- inviting --------------------------------------------------------------------------


def _revoke(session: Session, invitation_id: int, now: datetime) -> bool:
    """Revoke one open invitation; False if it was redeemed or revoked meanwhile."""
    result = session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation_id,
            Invitation.used_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def invite(
    db: Database,
    audit: AuditLog,
    entries: list[DirectoryEntry],
    *,
    base_url: str,
    validity: timedelta,
    actor: str,
    resend: bool = False,
    org: str = "",
    theme: Path | None = None,
    now: datetime | None = None,
    logon: str = "",
) -> InviteReport:
    """Invite each person: a fresh token, its hash stored, the link mailed (queued).

    A person with an open invitation is skipped unless ``resend``, which revokes it
    and sends a new link. People are invited INVITE_BATCH to a transaction (one query
    for their open invitations); if a batch fails, it is done again one person to a
    transaction, so one person's failure does not stop the others.
    """
    if validity <= timedelta(0):
        raise InputError("the invitation validity must be positive")
    when = _utc_now(now)
    report = InviteReport()
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[DirectoryEntry, str]] = []
    for entry in entries:
        key = (entry.directory, entry.login)
        if key in seen:
            continue
        seen.add(key)
        if not entry.enabled:
            report.skipped.append(f"{entry.login}: disabled in the directory")
            continue
        mail = (entry.mail or "").strip().lower()
        if not mail:
            report.skipped.append(f"{entry.login}: no mail address in the directory")
            continue
        if not is_plain_address(mail):
            report.skipped.append(f"{entry.login}: {mail!r} is not a plain mail address")
            continue
        todo.append((entry, mail))
    batch = _Batch(audit, when, when + validity, actor, resend, base_url, org, theme, logon)
    for first in range(0, len(todo), INVITE_BATCH):
        chunk = todo[first : first + INVITE_BATCH]
        try:
            with db.transaction() as session:
                done = batch.invite(session, chunk)
        except MailPKIError:
            done = InviteReport()
            for item in chunk:  # again one by one: only the failing person is left out
                try:
                    with db.transaction() as session:
                        one = batch.invite(session, [item])
                except MailPKIError as exc:
                    done.errors.append(f"{item[0].login}: {exc}")
                    continue
                done.sent += one.sent
                done.skipped += one.skipped
        report.sent += done.sent
        report.skipped += done.skipped
        report.errors += done.errors
    return report


@dataclass(frozen=True)
class _Batch:
    """What every invitation of one `invite` call shares."""

    audit: AuditLog
    when: datetime
    expires: datetime
    actor: str
    resend: bool
    base_url: str
    org: str
    theme: Path | None
    logon: str

    def invite(self, session: Session, chunk: list[tuple[DirectoryEntry, str]]) -> InviteReport:
        """Invite `chunk` (entry, mail) in the caller's transaction: the invitations
        written in one flush, then their mails and audit records."""
        report = InviteReport()
        open_ = _open_invitations_of(session, [entry.login for entry, _ in chunk], self.when)
        made: list[tuple[DirectoryEntry, str, Invitation, str, int]] = []
        for entry, mail in chunk:
            previous = open_.get((entry.login, entry.directory), [])
            if previous and not self.resend:
                until = _expires_text(max(p.expires_at for p in previous))
                report.skipped.append(
                    f"{entry.login}: already invited (link valid until {until}); "
                    "use --resend for a new link"
                )
                continue
            revoked = sum(_revoke(session, p.id, self.when) for p in previous)
            row, link = new_link(
                session, login=entry.login, directory=entry.directory, mail=mail,
                expires=self.expires, when=self.when, base_url=self.base_url, flush=False,
            )  # fmt: skip
            made.append((entry, mail, row, link, revoked))
        session.flush()  # the invitations' ids, for their audit records
        events: list[tuple[str, Mapping[str, object]]] = []
        for entry, mail, row, link, revoked in made:
            _queue_mail(
                session, mail=mail, name=entry.display_name or entry.login, link=link,
                expires=self.expires, when=self.when, reminder=False, org=self.org,
                theme=self.theme, logon=self.logon, flush=False,
            )  # fmt: skip
            events.append((
                "invitation.sent",
                {"invitation": row.id, "login": entry.login, "directory": entry.directory,
                 "mail": mail, "expires_at": self.expires.isoformat(), "replaced": revoked},
            ))  # fmt: skip
            report.sent.append(entry.login)
        self.audit.append_all(session, events, actor=self.actor)
        return report


def _open_invitations_of(
    session: Session, logins: list[str], now: datetime
) -> dict[tuple[str, str], list[Invitation]]:
    """The open invitations of these logins, by (login, directory): one query."""
    found: dict[tuple[str, str], list[Invitation]] = {}
    rows = session.scalars(
        select(Invitation).where(
            Invitation.login.in_(logins),
            Invitation.used_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
    )
    for row in rows:
        if row.expires_at > now:
            found.setdefault((row.login, row.directory), []).append(row)
    return found


def new_link(
    session: Session,
    *,
    login: str,
    directory: str,
    mail: str,
    expires: datetime,
    when: datetime,
    base_url: str,
    reminder: bool = False,
    flush: bool = True,
) -> tuple[Invitation, str]:
    """A new one-time link (its row holds only the token's hash), in the caller's
    transaction; the caller mails it (an invitation, a reminder, a renewal notice)."""
    token = _new_token()
    row = Invitation(
        login=login,
        directory=directory,
        mail=mail,
        token_sha256=hash_token(token),
        created_at=when,
        expires_at=expires,
        sent_at=when,
        reminded_at=when if reminder else None,
        used_at=None,
        revoked_at=None,
    )
    session.add(row)
    if flush:  # the row's id now (a batch of notices leaves it to the commit)
        session.flush()
    return row, _link(base_url, token)


def _send_link(
    session: Session,
    *,
    login: str,
    directory: str,
    mail: str,
    name: str,
    expires: datetime,
    when: datetime,
    reminder: bool,
    base_url: str,
    org: str,
    theme: Path | None,
    logon: str = "",
) -> Invitation:
    """A new invitation row (only its token's hash) and its mail, in the caller's
    transaction: the first invitation and a reminder differ only in wording."""
    row, link = new_link(
        session, login=login, directory=directory, mail=mail, expires=expires, when=when,
        base_url=base_url, reminder=reminder,
    )  # fmt: skip
    _queue_mail(
        session, mail=mail, name=name, link=link, expires=expires, when=when,
        reminder=reminder, org=org, theme=theme, logon=logon,
    )  # fmt: skip
    return row


def _queue_mail(
    session: Session,
    *,
    mail: str,
    name: str,
    link: str,
    expires: datetime,
    when: datetime,
    reminder: bool,
    org: str,
    theme: Path | None,
    logon: str,
    flush: bool = True,
) -> None:
    """The invitation's (or reminder's) mail, into the outbox, in the caller's transaction."""
    values = {"name": name, "link": link, "expires": _expires_text(expires),
              "org": org, "logon": logon or logon_help(())}  # fmt: skip
    template = "reminder" if reminder else "invitation"
    queue(
        session,
        kind="invitation.reminder" if reminder else "invitation",
        to=mail,
        subject=_subject(org, reminder=reminder),
        body=render_template(f"{template}.txt", theme, values),
        html=render_template(f"{template}.html", theme, values),
        now=when,
        flush=flush,
    )


# -- redeeming -------------------------------------------------------------------------


def _usable(session: Session, digest: str, when: datetime) -> Invitation:
    row = session.scalar(select(Invitation).where(Invitation.token_sha256 == digest))
    if row is None:
        raise InvitationInvalid("this invitation link is not valid")
    if row.used_at is not None:
        raise InvitationUsed("this invitation link was already used")
    if row.revoked_at is not None:
        raise InvitationSuperseded(
            "this invitation link was replaced by a newer one: use the link in the latest mail"
        )
    if row.expires_at <= when:
        raise InvitationExpired("this invitation link has expired: ask for a new one")
    return row


def peek(db: Database, token: str, *, now: datetime | None = None) -> Invitation:
    """The invitation behind a link if it could be redeemed now, without using it up
    (opening the link must not spend it: mail scanners fetch links too)."""
    digest = hash_token(check_token(token))
    with db.session() as session:
        row = _usable(session, digest, _utc_now(now))
        session.expunge(row)
    return row


def redeem(db: Database, token: str, *, now: datetime | None = None) -> Invitation:
    """Use an invitation link once; refuses unknown, expired, superseded and used links.

    The final step is a conditional UPDATE (``used_at IS NULL``): of two concurrent
    redeems of one link exactly one wins.
    """
    digest = hash_token(check_token(token))
    when = _utc_now(now)
    with db.transaction() as session:
        row = _usable(session, digest, when)
        result = session.execute(
            update(Invitation)
            .where(
                Invitation.id == row.id,
                Invitation.used_at.is_(None),
                Invitation.revoked_at.is_(None),
            )
            .values(used_at=when)
            .execution_options(synchronize_session=False)
        )
        if int(result.rowcount) != 1:  # type: ignore[attr-defined]
            raise InvitationUsed("this invitation link was already used")
        row.used_at = when
        session.expunge(row)
    return row


# -- reminding -------------------------------------------------------------------------


def remind(
    db: Database,
    audit: AuditLog,
    *,
    older_than: timedelta,
    base_url: str,
    now: datetime | None = None,
    actor: str = "system:invitations",
    org: str = "",
    theme: Path | None = None,
    logon: str = "",
) -> int:
    """One reminder per open invitation sent more than ``older_than`` ago: a fresh link
    (same expiry; the old link is revoked). Returns how many reminders were queued."""
    when = _utc_now(now)
    cutoff = when - older_than
    with db.session() as session:
        candidates = [
            (row.id, row.login, row.directory, row.mail, row.expires_at)
            for row in session.scalars(
                select(Invitation)
                .where(
                    Invitation.used_at.is_(None),
                    Invitation.revoked_at.is_(None),
                    Invitation.reminded_at.is_(None),
                    Invitation.sent_at <= cutoff,
                )
                .order_by(Invitation.id)
            )
        ]
    count = 0
    for invitation_id, login, directory, mail, expires in candidates:
        if expires <= when:
            continue
        with db.transaction() as session:
            if not _revoke(session, invitation_id, when):
                continue  # redeemed or replaced since we looked
            row = _send_link(
                session,
                login=login,
                directory=directory,
                mail=mail,
                name=login,
                expires=expires,
                when=when,
                reminder=True,
                base_url=base_url,
                org=org,
                theme=theme,
                logon=logon,
            )
            audit.append(
                session,
                "invitation.reminded",
                actor=actor,
                data={"invitation": row.id, "replaced": invitation_id, "login": login,
                      "directory": directory, "mail": mail},
            )  # fmt: skip
        count += 1
    return count
