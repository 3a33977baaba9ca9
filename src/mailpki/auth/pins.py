"""One-time enrollment PINs from an HR list, for people without a directory password.

HR exports ``employee_id,mail,name,pin`` as a CSV file, or the rows come from a
configured SELECT on the HR database; the PINs are hashed with argon2id on import
(only the hash is stored, the PIN itself is never stored, logged or echoed in a
message). A PIN works once, until it expires, and is void after `max_attempts` wrong
guesses; re-importing an employee replaces their PIN and resets all of that.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError
from ldap3.utils.dn import escape_rdn
from sqlalchemy import ColumnElement, Connection, create_engine, func, insert, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from mailpki.auth.identity import Identity, check_expected_mail
from mailpki.auth.limiter import LoginLimiter, limiter_keys, lock_end
from mailpki.directory.entry import DirectoryEntry
from mailpki.directory.people_import import CsvRecord, read_csv
from mailpki.directory.validation import MAX_REPORTED_ERRORS, check_mail, check_text
from mailpki.errors import AuthenticationError, ConfigError, InputError, StoreError
from mailpki.store.db import Database
from mailpki.store.models import HRPin

__all__ = [
    "ARGON2_MEMORY_KIB",
    "ARGON2_PARALLELISM",
    "ARGON2_TIME_COST",
    "PIN_COLUMNS",
    "PIN_MAX",
    "PIN_MIN",
    "WRONG_PIN",
    "PinAuthenticator",
    "PinImportReport",
    "check_sql_query",
    "check_sql_url",
    "import_pin_rows",
    "import_pins",
    "pin_hasher",
    "rows_from_sql",
]

# argon2id, 2 passes over 24 MiB, one lane: about 30 ms per hash on the reference
# machine; a 6-digit PIN space is small, so the cost per guess plus the attempt limit
# and the lockout are what protect it.
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 24 * 1024
ARGON2_PARALLELISM = 1
PIN_MIN, PIN_MAX = 6, 64
WRONG_PIN = "wrong employee id or PIN"
_MAX_IDENT = 320
_CHUNK = 500
PIN_COLUMNS = ("employee_id", "mail", "name", "pin")


def pin_hasher() -> PasswordHasher:
    return PasswordHasher(
        time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM
    )


def _utc_now(clock: Callable[[], datetime]) -> datetime:
    now = clock()
    if now.tzinfo is None:
        raise ConfigError("the PIN clock returned a naive datetime")
    return now.astimezone(UTC)


def _system_clock() -> datetime:
    return datetime.now(UTC)


# -- import ----------------------------------------------------------------------------------


@dataclass
class PinImportReport:
    added: int = 0
    replaced: int = 0  # employee ids that had a PIN: new PIN, unused, attempts and expiry reset
    errors: list[str] = field(default_factory=list)  # "line N: why"; never a PIN


@dataclass
class _PinRow:
    line: int
    employee_id: str
    mail: str
    name: str
    pin: str


def _employee_id(value: str) -> str:
    employee_id = check_text(value, what="the employee id", max_len=64)
    if not employee_id:
        raise InputError("the employee id is empty")
    if "@" in employee_id or any(ch.isspace() for ch in employee_id):
        raise InputError("the employee id contains '@' or spaces")
    return employee_id


def _pin(value: str) -> str:
    # Never echo the value: messages end up in reports and logs.
    pin = check_text(value, what="the PIN", max_len=PIN_MAX)
    if len(pin) < PIN_MIN:
        raise InputError(f"the PIN must be {PIN_MIN} to {PIN_MAX} characters")
    return pin


def _validate(records: list[CsvRecord], errors: list[tuple[int, str]], unit: str) -> list[_PinRow]:
    rows: list[_PinRow] = []
    seen_id: dict[str, int] = {}
    seen_mail: dict[str, int] = {}
    for record in records:
        if record.error is not None:
            errors.append((record.line, record.error))
            continue
        values = record.values
        try:
            row = _PinRow(
                record.line,
                _employee_id(values["employee_id"]),
                check_mail(values["mail"]),
                check_text(values["name"], what="the name"),
                _pin(values["pin"]),
            )
            if not row.name:
                raise InputError("the name is empty")
        except InputError as exc:
            errors.append((record.line, f"{unit} {record.line}: {exc}"))
            continue
        if row.employee_id in seen_id:
            errors.append(
                (row.line, f"{unit} {row.line}: employee id {row.employee_id!r} is already "
                 f"on {unit} {seen_id[row.employee_id]}")
            )  # fmt: skip
            continue
        if row.mail.lower() in seen_mail:
            errors.append(
                (row.line, f"{unit} {row.line}: mail {row.mail!r} is already on {unit} "
                 f"{seen_mail[row.mail.lower()]}")
            )  # fmt: skip
            continue
        seen_id[row.employee_id] = row.line
        seen_mail[row.mail.lower()] = row.line
        rows.append(row)
    return rows


def import_pins(
    db: Database,
    data: bytes,
    *,
    validity: timedelta,
    clock: Callable[[], datetime] | None = None,
    hasher: PasswordHasher | None = None,
    workers: int | None = None,
) -> PinImportReport:
    """Import an HR PIN list (CSV ``employee_id,mail,name,pin``) in one transaction.

    Bad rows are reported ("line N: why") and skipped; a file-level problem raises
    InputError and changes nothing. PINs are hashed before the transaction opens, in
    `workers` threads (argon2 releases the GIL), so the write lock is held briefly."""
    _check_validity(validity)
    records = read_csv(data, required=PIN_COLUMNS, what="PIN file")
    return _import_records(
        db, records, "line", validity=validity, clock=clock, hasher=hasher, workers=workers
    )


def import_pin_rows(
    db: Database,
    rows: Sequence[Mapping[str, str]],
    *,
    validity: timedelta,
    clock: Callable[[], datetime] | None = None,
    hasher: PasswordHasher | None = None,
    workers: int | None = None,
) -> PinImportReport:
    """Import HR PIN rows (mappings with the keys of PIN_COLUMNS, e.g. from rows_from_sql).

    Exactly like import_pins, but errors name the row ("row N: why", counted from 1)."""
    _check_validity(validity)
    records: list[CsvRecord] = []
    for number, row in enumerate(rows, start=1):
        values = {str(key).strip().lower(): value for key, value in row.items()}
        missing = [column for column in PIN_COLUMNS if column not in values]
        if missing:
            error = f"row {number}: lacks the column(s) {', '.join(missing)}"
            records.append(CsvRecord(number, {}, error))
        elif not all(isinstance(values[column], str) for column in PIN_COLUMNS):
            records.append(CsvRecord(number, {}, f"row {number}: a value is not text"))
        else:
            records.append(CsvRecord(number, {column: values[column] for column in PIN_COLUMNS}))
    return _import_records(
        db, records, "row", validity=validity, clock=clock, hasher=hasher, workers=workers
    )


def _check_validity(validity: timedelta) -> None:
    if validity <= timedelta(0):
        raise InputError("the PIN validity must be positive")


def _import_records(
    db: Database,
    records: list[CsvRecord],
    unit: str,
    *,
    validity: timedelta,
    clock: Callable[[], datetime] | None,
    hasher: PasswordHasher | None,
    workers: int | None,
) -> PinImportReport:
    """Validate, hash (outside the transaction) and store; shared by both sources."""
    hasher = hasher or pin_hasher()
    errors: list[tuple[int, str]] = []
    rows = _validate(records, errors, unit)
    with ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1)) as pool:
        hashes = list(pool.map(hasher.hash, (row.pin for row in rows)))
    for row in rows:
        row.pin = ""  # drop our reference to the clear PIN as soon as it is hashed

    report = PinImportReport()
    now = _utc_now(clock or _system_clock)
    with db.transaction() as session:
        _store(session, rows, hashes, now, now + validity, report, errors, unit)
    errors.sort(key=lambda item: item[0])
    report.errors = [message for _, message in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        report.errors.append("… more errors not shown: fix these and import again")
    return report


def _store(
    session: Session,
    rows: list[_PinRow],
    hashes: list[str],
    now: datetime,
    expires: datetime,
    report: PinImportReport,
    errors: list[tuple[int, str]],
    unit: str,
) -> None:
    ids = sorted({row.employee_id for row in rows})
    existing: dict[str, int] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for pk, employee_id in session.execute(
            select(HRPin.id, HRPin.employee_id).where(HRPin.employee_id.in_(chunk))
        ):
            existing[employee_id] = pk
    # One mail, one PIN row: a logon by mail must find exactly one person.
    mail_owner: dict[str, str] = {}
    mail_of: dict[str, str] = {}
    for employee_id, mail in session.execute(select(HRPin.employee_id, HRPin.mail)):
        mail_owner[str(mail).lower()] = employee_id
        mail_of[employee_id] = str(mail).lower()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row, pin_hash in zip(rows, hashes, strict=True):
        owner = mail_owner.get(row.mail.lower())
        if owner is not None and owner != row.employee_id:
            errors.append(
                (row.line, f"{unit} {row.line}: mail {row.mail!r} already belongs to "
                 f"employee id {owner!r}")
            )  # fmt: skip
            continue
        values: dict[str, Any] = {
            "employee_id": row.employee_id,
            "mail": row.mail,
            "name": row.name,
            "pin_hash": pin_hash,
            "imported_at": now,
            "expires_at": expires,
            "used_at": None,
            "attempts": 0,
        }
        if row.employee_id in existing:
            updates.append({"id": existing[row.employee_id], **values})
            report.replaced += 1
        else:
            inserts.append(values)
            report.added += 1
        old = mail_of.get(row.employee_id)
        if old is not None and mail_owner.get(old) == row.employee_id:
            del mail_owner[old]
        mail_owner[row.mail.lower()] = row.employee_id
        mail_of[row.employee_id] = row.mail.lower()
    for start in range(0, len(updates), _CHUNK):
        session.execute(update(HRPin), updates[start : start + _CHUNK])
    for start in range(0, len(inserts), _CHUNK):
        session.execute(insert(HRPin), inserts[start : start + _CHUNK])


# -- the HR database as a source --------------------------------------------------------

_QUERY_MAX = 10_000
_CONNECT_TIMEOUT_SECONDS = 10


def check_sql_url(value: str) -> str:
    """An SQLAlchemy URL of the HR database, without a password; "" means not set."""
    url = value.strip()
    if not url:
        return ""
    if any(ord(ch) < 32 or ch == "\x7f" for ch in url):
        raise ConfigError("the HR database URL contains control characters")
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError):
        # Not echoed: a malformed URL may still hold a password.
        raise ConfigError(
            "the HR database URL is not an SQLAlchemy URL such as postgresql+psycopg://USER@HOST/DB"
        ) from None
    if parsed.password is not None or any(k.lower() == "password" for k in parsed.query):
        # Config files are shown and audited; libpq reads the password from its own file.
        raise ConfigError(
            "the HR database URL must not contain a password: put it in ~/.pgpass of the "
            "user running mailpki, or in the file PGPASSFILE names"
        )
    return url


def check_sql_query(value: str) -> str:
    """A single SELECT (no ';', so nothing can be chained after it); "" means not set.

    This is a first filter only: the query also runs in a read-only transaction that
    is rolled back, and the HR account should be allowed to read and nothing else."""
    query = value.strip()
    if not query:
        return ""
    if len(query) > _QUERY_MAX:
        raise ConfigError(f"the HR query is longer than {_QUERY_MAX} characters")
    if any((ord(ch) < 32 and ch not in "\t\n\r") or ch == "\x7f" for ch in query):
        raise ConfigError("the HR query contains control characters")
    if ";" in query:
        raise ConfigError("the HR query must be one SELECT statement, without ';'")
    if not re.match(r"select\b", query, re.IGNORECASE):
        raise ConfigError(
            f"the HR query must start with SELECT and return the columns {', '.join(PIN_COLUMNS)}"
        )
    return query


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own first line (no SQL, no parameters, no URL)."""
    origin: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    lines = str(origin).strip().splitlines()
    return (lines[0] if lines else type(origin).__name__)[:300]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _read_only(connection: Connection, backend: str) -> None:
    if backend == "postgresql":
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")  # must come first
    elif backend == "sqlite":
        connection.exec_driver_sql("PRAGMA query_only = ON")  # the connection is not pooled


def _column_order(names: Sequence[str]) -> list[str]:
    lowered = [name.strip().lower() for name in names]
    missing = [column for column in PIN_COLUMNS if column not in lowered]
    extra = [name for name in lowered if name not in PIN_COLUMNS]
    if missing or extra or len(set(lowered)) != len(lowered):
        problems = []
        if missing:
            problems.append(f"lacks the column(s) {', '.join(missing)}")
        if extra:
            problems.append(f"has other column(s) {', '.join(repr(n[:40]) for n in extra[:5])}")
        if not problems:
            problems.append("names a column twice")
        raise InputError(
            f"the HR query {' and '.join(problems)}: it must return exactly "
            f"{', '.join(PIN_COLUMNS)} (rename with AS)"
        )
    return lowered


def rows_from_sql(url: str, query: str, *, limit: int = 1_000_000) -> list[dict[str, str]]:
    """Run the HR query and return its rows as text (None becomes "").

    Read-only: the query runs in a transaction that is never committed, READ ONLY on
    PostgreSQL and query_only on SQLite. Connection problems raise StoreError, a bad
    URL or driver ConfigError, the wrong columns or too many rows InputError; no
    message holds a credential (the URL cannot hold one)."""
    url, query = check_sql_url(url), check_sql_query(query)
    if not url or not query:
        raise ConfigError("the HR database URL and query must both be set")
    parsed: URL = make_url(url)
    where = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        # An HR server that does not answer must fail the import, not hang it.
        connect_args["connect_timeout"] = _CONNECT_TIMEOUT_SECONDS
    try:
        engine = create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # unknown dialect, no driver
        raise ConfigError(f"cannot use the HR database URL {where}: {exc}") from None
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot connect to the HR database {where}: {_reason(exc)}") from None
        with connection:
            rows: list[dict[str, str]] = []
            try:
                with connection.begin() as transaction:
                    _read_only(connection, backend)
                    # no_parameters: the DBAPI gets the text as is ('%' and ':x' are not
                    # placeholders); stream_results: a big HR table is not buffered twice.
                    result = connection.execution_options(
                        no_parameters=True, stream_results=True
                    ).exec_driver_sql(query)
                    if not result.returns_rows:
                        raise InputError("the HR query does not return rows: it must be a SELECT")
                    columns = _column_order(list(result.keys()))
                    for row in result:
                        if len(rows) >= limit:
                            raise InputError(f"the HR query returns more than {limit} rows")
                        rows.append(dict(zip(columns, map(_cell, row), strict=True)))
                    result.close()
                    transaction.rollback()  # nothing to keep: a reader never commits
            except SQLAlchemyError as exc:
                raise StoreError(f"the HR query failed on {where}: {_reason(exc)}") from None
        return rows
    finally:
        engine.dispose()


# -- logon -----------------------------------------------------------------------------------

_State = Literal["missing", "usable", "used", "expired", "void"]


@dataclass(frozen=True)
class _Claim:
    """What the attempt found, read (and counted) in one short transaction."""

    state: _State
    row_id: int = 0
    pin_hash: str = ""
    employee_id: str = ""
    mail: str = ""
    name: str = ""


_REFUSALS = {
    "used": "this PIN was already used",
    "expired": "this PIN has expired: ask HR for a new one",
    "void": "this PIN is void after too many wrong attempts: ask HR for a new one",
}


def pin_lockout_message(until: datetime, max_attempts: int) -> str:
    """The lockout as a PIN holder needs it: the same words whether or not the id exists
    (a guesser learns nothing), and the fact that waiting does not bring the PIN back."""
    return (
        f"too many failed logons. A PIN is void after {max_attempts} wrong tries, and the "
        "right one is then refused too: ask HR (who gave you the PIN) for a new one, and "
        f"log on with it after {lock_end(until)}"
    )


class PinAuthenticator:
    """Logon by employee id (or mail) and one-time HR PIN.

    `lookup_mail` finds the person's directory entry; without one, the identity is
    built from the HR row (directory "hr")."""

    def __init__(
        self,
        db: Database,
        limiter: LoginLimiter,
        *,
        max_attempts: int,
        lookup_mail: Callable[[str], DirectoryEntry | None],
        clock: Callable[[], datetime] | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, not {max_attempts!r}")
        self.db = db
        self._limiter = limiter
        self._max_attempts = max_attempts
        self._lookup_mail = lookup_mail
        self._clock = clock or _system_clock
        self._hasher = hasher or pin_hasher()
        # Verified against when nobody has that id, so the answer takes as long.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def _verify(self, pin_hash: str, pin: str) -> bool:
        try:
            return bool(self._hasher.verify(pin_hash, pin))
        except (Argon2Error, InvalidHashError):
            return False

    def _refuse(self, keys: tuple[str, ...]) -> AuthenticationError:
        for key in keys:
            self._limiter.failed(key)
        return AuthenticationError(WRONG_PIN)

    def _claim(self, ident: str) -> _Claim:
        """Find the row and, if it can still be used, count this attempt against it.

        The attempt is counted before the (slow) verification and in its own
        transaction, so parallel guesses cannot exceed max_attempts and no lock is
        held while argon2 runs."""
        where: ColumnElement[bool]
        if "@" in ident:
            where = func.lower(HRPin.mail) == ident.lower()
        else:
            where = HRPin.employee_id == ident
        with self.db.transaction() as session:
            rows = (
                session.execute(
                    select(HRPin)
                    .where(where)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                    .limit(2)
                )
                .scalars()
                .all()
            )
            if len(rows) != 1:  # none, or (import prevents it) an ambiguous mail
                return _Claim("missing")
            row = rows[0]
            state: _State
            if row.used_at is not None:
                state = "used"
            elif row.expires_at <= _utc_now(self._clock):
                state = "expired"
            elif row.attempts >= self._max_attempts:
                state = "void"
            else:
                state = "usable"
                row.attempts += 1
            return _Claim(state, row.id, row.pin_hash, row.employee_id, row.mail, row.name)

    def _use(self, claim: _Claim) -> bool:
        """Mark the PIN used; False if someone else used it (or it was replaced) meanwhile."""
        with self.db.transaction() as session:
            # Conditional update: of two racing logons with the right PIN, one wins.
            result = session.execute(
                update(HRPin)
                .where(
                    HRPin.id == claim.row_id,
                    HRPin.used_at.is_(None),
                    HRPin.pin_hash == claim.pin_hash,
                )
                .values(used_at=_utc_now(self._clock))
            )
            return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def authenticate(
        self, login: str, secret: str, *, source: str = "", expect_mail: str | None = None
    ) -> Identity:
        """`login` is the employee id or the mail address from the HR list."""
        ident = login.strip()
        keys = limiter_keys(ident, source)
        for key in keys:
            until = self._limiter.locked_until(key)
            if until is not None:
                raise AuthenticationError(pin_lockout_message(until, self._max_attempts))
        pin = secret.strip()
        if (
            not ident
            or len(ident) > _MAX_IDENT
            or not PIN_MIN <= len(pin) <= PIN_MAX
            or any(ord(ch) < 32 or ch == "\x7f" for ch in ident + pin)
        ):
            raise self._refuse(keys)

        claim = self._claim(ident)
        right = self._verify(claim.pin_hash or self._dummy_hash, pin)
        if claim.state == "missing" or not right:
            raise self._refuse(keys)
        if claim.state != "usable":
            # Said only to someone who knows the PIN: it reveals nothing to a guesser.
            raise AuthenticationError(_REFUSALS[claim.state])

        # Looked up before the PIN is spent: a directory outage must not burn it.
        entry = self._lookup_mail(claim.mail) or DirectoryEntry(
            directory="hr",
            dn=f"employeeNumber={escape_rdn(claim.employee_id)!s},ou=hr",
            login=claim.employee_id,
            mail=claim.mail,
            display_name=claim.name,
            enabled=True,
            employee_id=claim.employee_id,
        )
        if not entry.enabled:
            raise AuthenticationError("the account is disabled")
        check_expected_mail(entry, expect_mail)  # before the PIN is spent
        if not self._use(claim):
            raise AuthenticationError(_REFUSALS["used"])
        for key in keys:
            self._limiter.succeeded(key)
        return Identity(entry=entry, method="pin")
