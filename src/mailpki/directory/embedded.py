"""The embedded directory: people kept in the instance database (see people_import).

Used when no LDAP directory is configured. It has no passwords (people log on with an
HR PIN), so `verify_password` always refuses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailpki.directory.entry import DirectoryEntry
from mailpki.directory.validation import (
    LOGIN_MAX,
    MAIL_MAX,
    MAX_LIMIT,
    MAX_SEARCH,
    NAME,
    T,
    has_bad_char,
)
from mailpki.errors import DirectoryError, InputError, StoreError
from mailpki.store.db import Database
from mailpki.store.models import EmbeddedCertificate, EmbeddedEntry

# -- the directory -------------------------------------------------------------------------

# find_many_by_mail reads the whole table instead of batches of IN (...) above this.
WHOLE_TABLE_ABOVE = 5000


def _entry(row: EmbeddedEntry) -> DirectoryEntry:
    try:
        groups = json.loads(row.groups) if row.groups and row.groups != "[]" else []
    except ValueError:
        groups = []
    return DirectoryEntry(
        directory=NAME,
        dn=row.dn,
        login=row.login,
        mail=row.mail,
        display_name=row.display_name,
        given_name=row.given_name,
        surname=row.surname,
        organisation=row.organisation,
        site=row.site,
        enabled=bool(row.enabled),
        groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        employee_id=row.employee_id,
    )


def _like_prefix(text: str) -> str:
    """`text` as a LIKE prefix pattern matching only literally (escape char: backslash)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class EmbeddedDirectory:
    """The Directory port on the instance database (table directory_entries)."""

    def __init__(
        self,
        db: Database,
        *,
        domains: tuple[str, ...] = (),
        read_db: Callable[[], Database] | None = None,
    ) -> None:
        self.db = db
        # Searches (the address list, the API's people search) may read a replica;
        # logon and publishing read the primary.
        self.read_db: Callable[[], Database] = read_db or (lambda: db)
        self.name = NAME
        self.domains = tuple(d.strip().lower() for d in domains if d.strip())

    # A database failure here is the directory being unavailable to its callers, who
    # handle DirectoryError (retry the publish job, "directory unavailable" at logon).
    @contextmanager
    def _reading(self, db: Database | None = None) -> Iterator[Session]:
        try:
            with (db or self.db).session() as session:
                yield session
        except StoreError as exc:
            raise DirectoryError(f"the embedded directory is unavailable: {exc}") from exc

    def _writing(self, work: Callable[[Session], T]) -> T:
        for attempt in range(3):
            try:
                with self.db.transaction() as session:
                    return work(session)
            except StoreError as exc:
                # Two publishers of one certificate can race on the unique constraint
                # (PostgreSQL); the loser retries and finds the row.
                if isinstance(exc.__cause__, IntegrityError) and attempt < 2:
                    continue
                raise DirectoryError(f"the embedded directory is unavailable: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _one(self, where: ColumnElement[bool]) -> DirectoryEntry | None:
        with self._reading() as session:
            rows = session.scalars(
                select(EmbeddedEntry).where(where).order_by(EmbeddedEntry.id).limit(2)
            ).all()
        if len(rows) > 1:
            raise DirectoryError("two embedded directory entries match one mail address")
        return _entry(rows[0]) if rows else None

    def find_by_login(self, login: str) -> DirectoryEntry | None:
        login = login.strip()
        if "@" in login:
            return self.find_by_mail(login)
        if not login or len(login) > LOGIN_MAX or has_bad_char(login):
            return None  # cannot be stored: no need to ask
        return self._one(EmbeddedEntry.login == login.lower())

    def find_by_principal(self, user: str, realm: str) -> DirectoryEntry | None:
        """The embedded directory keeps no principals: the user part is the login."""
        if "@" in user:
            return None
        return self.find_by_login(user)

    def find_by_mail(self, mail: str) -> DirectoryEntry | None:
        mail = mail.strip()
        if not mail or "@" not in mail or len(mail) > MAIL_MAX or has_bad_char(mail):
            return None
        # The exact match uses the index; the lower() one catches a differently cased query.
        return self._one(EmbeddedEntry.mail == mail) or self._one(
            func.lower(EmbeddedEntry.mail) == mail.lower()
        )

    def find_many_by_mail(self, mails: list[str]) -> dict[str, DirectoryEntry | None]:
        wanted = sorted({m.strip().lower() for m in mails if m.strip()})
        found: dict[str, DirectoryEntry | None] = dict.fromkeys(wanted)
        # Plain rows, not ORM objects: the leaver check asks for every certificate holder.
        columns = [getattr(EmbeddedEntry, c.key) for c in EmbeddedEntry.__table__.columns]
        with self._reading() as session:
            if len(wanted) > WHOLE_TABLE_ABOVE:  # a check of everyone: one streamed scan
                rows = session.execute(
                    select(*columns)
                    .where(EmbeddedEntry.mail.is_not(None))
                    .execution_options(yield_per=10_000)
                )
                for row in rows:
                    mail = str(row.mail).lower()
                    if mail in found:
                        found[mail] = _entry(row)  # type: ignore[arg-type]
                return found
            for where in (EmbeddedEntry.mail, func.lower(EmbeddedEntry.mail)):
                # First the exact (indexed) match; then, for what is still missing, a
                # match ignoring case (a scan, but only for the few not found).
                missing = [m for m in wanted if found[m] is None]
                for start in range(0, len(missing), 500):
                    chunk = missing[start : start + 500]
                    for row in session.execute(select(*columns).where(where.in_(chunk))):
                        entry = _entry(row)  # type: ignore[arg-type]
                        found[str(entry.mail).lower()] = entry
        return found

    def search(self, text: str, *, limit: int = 50) -> list[DirectoryEntry]:
        text = text.strip()
        if not text:
            raise InputError("type at least one character to search for")
        if len(text) > MAX_SEARCH:
            raise InputError(f"the search text is longer than {MAX_SEARCH} characters")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InputError("the search limit must be a positive whole number")
        if has_bad_char(text):
            return []  # no stored value contains control characters (and PostgreSQL refuses NUL)
        pattern = _like_prefix(text.lower())
        columns = (
            EmbeddedEntry.login,
            EmbeddedEntry.mail,
            EmbeddedEntry.display_name,
            EmbeddedEntry.given_name,
            EmbeddedEntry.surname,
        )
        query = (
            select(EmbeddedEntry)
            .where(or_(*(func.lower(c).like(pattern, escape="\\") for c in columns)))
            .order_by(
                func.lower(func.coalesce(EmbeddedEntry.display_name, EmbeddedEntry.login)),
                EmbeddedEntry.login,
            )
            .limit(min(limit, MAX_LIMIT))
        )
        with self._reading(self.read_db()) as session:
            return [_entry(row) for row in session.scalars(query)]

    def verify_password(self, entry: DirectoryEntry, password: str) -> bool:
        # The embedded directory holds no passwords: its people log on with an HR PIN.
        return False

    def publish(self, dn: str, certificate_der: bytes) -> bool:
        der = _check_der(certificate_der)

        def work(session: Session) -> bool:
            entry_id = session.scalar(select(EmbeddedEntry.id).where(EmbeddedEntry.dn == dn))
            if entry_id is None:
                return False
            fingerprint = _fingerprint(der)
            present = session.scalar(
                select(EmbeddedCertificate.id).where(
                    EmbeddedCertificate.entry_id == entry_id,
                    EmbeddedCertificate.fingerprint == fingerprint,
                )
            )
            if present is None:
                session.add(
                    EmbeddedCertificate(entry_id=entry_id, fingerprint=fingerprint, der=der)
                )
                session.flush()
            return True

        return self._writing(work)

    def unpublish(self, dn: str, certificate_der: bytes) -> bool:
        """Remove that certificate (idempotent); False if the entry does not exist."""
        der = _check_der(certificate_der)

        def work(session: Session) -> bool:
            entry_id = session.scalar(select(EmbeddedEntry.id).where(EmbeddedEntry.dn == dn))
            if entry_id is None:
                return False
            session.execute(
                delete(EmbeddedCertificate).where(
                    EmbeddedCertificate.entry_id == entry_id,
                    EmbeddedCertificate.fingerprint == _fingerprint(der),
                )
            )
            return True

        return self._writing(work)

    def certificates(self, dn: str) -> list[bytes]:
        with self._reading() as session:
            rows = session.scalars(
                select(EmbeddedCertificate.der)
                .join(EmbeddedEntry, EmbeddedEntry.id == EmbeddedCertificate.entry_id)
                .where(EmbeddedEntry.dn == dn)
                .order_by(EmbeddedCertificate.id)
            )
            return [bytes(der) for der in rows]

    def close(self) -> None:
        """Nothing to release: the database belongs to the instance."""


def _check_der(der: bytes) -> bytes:
    if not isinstance(der, bytes | bytearray | memoryview) or not der:
        raise InputError("a certificate to publish must be non-empty DER bytes")
    return bytes(der)
