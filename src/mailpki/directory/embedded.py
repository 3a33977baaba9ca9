"""The embedded directory: people kept in the instance database, imported from CSV or LDIF.

Used when no LDAP directory is configured. It has no passwords (people log on with an
HR PIN), so `verify_password` always refuses. Everything imported is outside input:
each record is validated strictly, a bad record is reported with its line number and
skipped, and the whole import is one transaction (all good records or nothing).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ldap3.utils.dn import escape_rdn
from sqlalchemy import ColumnElement, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import DirectoryError, InputError, StoreError
from mailpki.store.db import Database
from mailpki.store.models import EmbeddedCertificate, EmbeddedEntry

__all__ = [
    "DN_SUFFIX",
    "MAX_IMPORT_BYTES",
    "MAX_REPORTED_ERRORS",
    "CsvRecord",
    "EmbeddedDirectory",
    "ImportReport",
    "check_login",
    "check_mail",
    "check_text",
    "decode_upload",
    "embedded_dn",
    "import_people",
    "read_csv",
]

NAME = "embedded"
DN_SUFFIX = "ou=people,o=embedded"
MAX_IMPORT_BYTES = 50 * 1024 * 1024
MAX_REPORTED_ERRORS = 1000  # a file of garbage must not produce a report larger than itself
MAX_SEARCH = 100
MAX_LIMIT = 1000
_CHUNK = 500  # rows per IN (...) / bulk statement: below every driver's parameter limit
_LOGIN_MAX = 128
_MAIL_MAX = 254  # RFC 5321 path limit
_NAME_MAX = 256
_GROUPS_MAX = 1000

T = TypeVar("T")


# -- validation (also used by the HR PIN import) -----------------------------------------

# Bidi embeddings/overrides/isolates can make a name display as something else.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LOGIN_RE = re.compile(r"[^\W][\w.-]*")
# RFC 5322 atext plus UTF-8 (RFC 6531); no quoted local parts, no comments.
_LOCAL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+)*"
)
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9\u0080-\U0010ffff-]{1,63}(?<!-)")


def _bad_char(value: str) -> bool:
    """Control, unassigned, surrogate, line/paragraph separator or bidi control."""
    return any(
        unicodedata.category(ch) in ("Cc", "Cs", "Cn", "Zl", "Zp") or ch in _BIDI_CONTROLS
        for ch in value
    )


def check_text(value: str, *, what: str, max_len: int = _NAME_MAX) -> str:
    """A printable single-line text of at most `max_len` characters, stripped; may be ""."""
    value = value.strip()
    if len(value) > max_len:
        raise InputError(f"{what} is longer than {max_len} characters")
    if _bad_char(value):
        raise InputError(f"{what} contains control characters")
    return value


def check_mail(value: str) -> str:
    """A plain addr-spec (local@domain): no display name, comments, quotes, commas or CR/LF."""
    mail = value.strip()
    if not mail:
        raise InputError("the mail address is empty")
    if len(mail) > _MAIL_MAX:
        raise InputError(f"the mail address is longer than {_MAIL_MAX} characters")
    if _bad_char(mail) or any(ch.isspace() for ch in mail):
        raise InputError("the mail address contains spaces or control characters")
    local, at, domain = mail.rpartition("@")
    if not at or not local or not domain:
        raise InputError(f"{mail!r} is not a mail address (local@domain)")
    if len(local) > 64 or not _LOCAL_RE.fullmatch(local):
        raise InputError(f"{mail!r} is not a plain mail address (local part)")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise InputError(f"{mail!r} is not a plain mail address (domain)")
    return mail


def check_login(value: str) -> str:
    """A login: letters, digits, '.', '_', '-' (no '@': that is a mail), lower-cased."""
    login = value.strip()
    if not login:
        raise InputError("the login is empty")
    if len(login) > _LOGIN_MAX:
        raise InputError(f"the login is longer than {_LOGIN_MAX} characters")
    if not _LOGIN_RE.fullmatch(login):
        raise InputError(
            f"login {login!r} may contain only letters, digits, '.', '_' and '-' "
            "(and starts with a letter or digit)"
        )
    return login.lower()


def embedded_dn(login: str) -> str:
    """The DN an embedded entry is known by (RFC 4514 escaped)."""
    return f"uid={escape_rdn(login)!s},{DN_SUFFIX}"


# -- reading uploaded files ----------------------------------------------------------------


def decode_upload(data: bytes, *, what: str, max_bytes: int = MAX_IMPORT_BYTES) -> str:
    """The file as text: size-limited, strict UTF-8 (a BOM is dropped)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError(f"the {what} must be bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise InputError(f"the {what} is larger than {max_bytes // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"the {what} is not UTF-8 text (line {line})") from None
    return text.removeprefix("\ufeff")


@dataclass(frozen=True)
class CsvRecord:
    """One CSV data row: its first line number and its fields by column, or an error."""

    line: int
    values: dict[str, str]
    error: str | None = None


def read_csv(
    data: bytes,
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    what: str = "CSV file",
) -> list[CsvRecord]:
    """Parse a CSV file with a header row naming its columns (any order, case-insensitive).

    File-level problems (size, encoding, header, broken quoting) raise InputError; a row
    with the wrong number of fields is returned as an error record. Messages never echo
    field values, so this is safe for files holding secrets."""
    text = decode_upload(data, what=what)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[CsvRecord] = []
    header: list[str] | None = None
    last = 0
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue  # blank line
            if header is None:
                header = _check_header(row, required, optional, what)
                continue
            if len(row) != len(header):
                records.append(
                    CsvRecord(
                        start,
                        {},
                        f"line {start}: expected {len(header)} fields, found {len(row)}",
                    )
                )
                continue
            records.append(CsvRecord(start, dict(zip(header, row, strict=True))))
    except csv.Error as exc:
        raise InputError(f"the {what} is not valid CSV (line {reader.line_num}): {exc}") from None
    if header is None:
        raise InputError(f"the {what} is empty: it needs a header row ({','.join(required)})")
    return records


def _check_header(
    row: list[str], required: Sequence[str], optional: Sequence[str], what: str
) -> list[str]:
    names = [cell.strip().lower() for cell in row]
    allowed = [*required, *optional]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        shown = ", ".join(repr(n[:40]) for n in unknown[:5])
        raise InputError(
            f"the {what} header has unknown column(s) {shown}; the columns are "
            f"{', '.join(required)} and optionally {', '.join(optional) or 'nothing else'}"
        )
    if len(set(names)) != len(names):
        raise InputError(f"the {what} header names a column twice")
    missing = [n for n in required if n not in names]
    if missing:
        raise InputError(f"the {what} header lacks the column(s) {', '.join(missing)}")
    return names


# -- records to import ---------------------------------------------------------------------

_FIELDS = (
    "mail",
    "display_name",
    "given_name",
    "surname",
    "organisation",
    "site",
    "groups",
    "employee_id",
    "enabled",
)


@dataclass
class _Person:
    """A validated record: the login and the columns the file sets (others stay as they are)."""

    line: int
    login: str
    values: dict[str, Any]


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0  # existing logins whose data changed (identical ones are not counted)
    errors: list[str] = field(default_factory=list)  # "line N: why", at most MAX_REPORTED_ERRORS


def _optional(value: str | None, *, what: str, max_len: int = _NAME_MAX) -> str | None:
    if value is None:
        return None
    return check_text(value, what=what, max_len=max_len) or None


def _groups(values: Iterable[str]) -> str:
    groups: list[str] = []
    for value in values:
        group = check_text(value, what="a group", max_len=_NAME_MAX)
        if group and group not in groups:
            groups.append(group)
    if len(groups) > _GROUPS_MAX:
        raise InputError(f"more than {_GROUPS_MAX} groups")
    return json.dumps(groups, ensure_ascii=False)


def _person(
    line: int,
    *,
    login: str,
    mail: str,
    name: str,
    optional: dict[str, str | None],
    groups: list[str] | None,
    enabled: bool | None,
) -> _Person:
    """Validate one record (raises InputError); only keys present in `optional` are set."""
    values: dict[str, Any] = {"mail": check_mail(mail)}
    display = check_text(name, what="the name")
    if not display:
        raise InputError("the name is empty")
    values["display_name"] = display
    limits = {"given_name": 128, "surname": 128, "employee_id": 64}
    for key, value in optional.items():
        values[key] = _optional(value, what=key.replace("_", " "), max_len=limits.get(key, 256))
    if groups is not None:
        values["groups"] = _groups(groups)
    if enabled is not None:
        values["enabled"] = enabled
    return _Person(line, check_login(login), values)


_CSV_REQUIRED = ("login", "mail", "name")
_CSV_OPTIONAL = (
    "given_name",
    "surname",
    "organisation",
    "site",
    "groups",
    "employee_id",
    "enabled",
)


def _csv_people(data: bytes) -> Iterator[_Person | str]:
    for record in read_csv(data, required=_CSV_REQUIRED, optional=_CSV_OPTIONAL):
        if record.error is not None:
            yield record.error
            continue
        row = record.values
        try:
            enabled: bool | None = None
            if "enabled" in row:
                flag = row["enabled"].strip().lower()
                if flag not in ("", "true", "false"):
                    raise InputError("enabled must be true or false")
                # Empty: new entries are enabled, existing ones keep their state.
                enabled = None if not flag else flag == "true"
            yield _person(
                record.line,
                login=row["login"],
                mail=row["mail"],
                name=row["name"],
                optional={
                    k: row[k]
                    for k in ("given_name", "surname", "organisation", "site", "employee_id")
                    if k in row
                },
                groups=row["groups"].split(";") if "groups" in row else None,
                enabled=enabled,
            )
        except InputError as exc:
            yield f"line {record.line}: {exc}"


# LDIF (RFC 2849), content records only. "attr:< URL" is refused: an import must never
# make the server read a file or fetch a URL.
_LDIF_LINE_RE = re.compile(
    r"(?P<attr>[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(?P<options>(?:;[A-Za-z0-9-]+)*)"
    r":(?P<kind>[:<]?) *(?P<value>.*)",
    re.DOTALL,
)
_PERSON_CLASSES = frozenset({"person", "organizationalperson", "inetorgperson", "user"})
_LDIF_SINGLE = {
    "uid": "login",
    "mail": "mail",
    "displayname": "display_name",
    "givenname": "given_name",
    "sn": "surname",
    "employeenumber": "employee_id",
}
_LDIF_FIRST = {"cn": "cn", "o": "organisation", "ou": "site"}  # often multi-valued
_LDIF_LINE_MAX = 1024 * 1024  # a photo fits; a 50 MB "value" does not
_LDIF_MAPPED = frozenset({*_LDIF_SINGLE, *_LDIF_FIRST, "memberof", "objectclass"})


class _LdifError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")


def _ldif_records(text: str) -> Iterator[tuple[list[tuple[int, str]], str | None]]:
    """Records as lists of (line number, logical line) with continuations unfolded, each
    with the error that made it unreadable (None if it is readable)."""
    record: list[tuple[int, str]] = []
    # The logical line being unfolded: parts joined once (repeated += would be quadratic).
    parts: list[str] = []
    first = size = 0
    in_comment = False
    broken: str | None = None

    def flush() -> None:
        nonlocal parts
        if parts:
            record.append((first, "".join(parts)))
            parts = []

    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if line == "":
            flush()
            if record or broken is not None:
                yield record, broken
            record, in_comment, broken = [], False, None
            continue
        if broken is not None:
            continue
        if line.startswith(" "):
            if in_comment:
                continue
            if not parts:
                broken = f"line {number}: a continuation line with no line to continue"
                continue
            size += len(line) - 1
            if size > _LDIF_LINE_MAX:
                broken = f"line {first}: a value longer than {_LDIF_LINE_MAX} characters"
                parts = []
                continue
            parts.append(line[1:])
            continue
        flush()
        if line.startswith("#"):
            in_comment = True
            continue
        in_comment = False
        if len(line) > _LDIF_LINE_MAX:
            broken = f"line {number}: a value longer than {_LDIF_LINE_MAX} characters"
            continue
        first, size, parts = number, len(line), [line]
    flush()
    if record or broken is not None:
        yield record, broken


def _ldif_value(number: int, attr: str, kind: str, value: str) -> bytes:
    if kind == "<":
        raise _LdifError(number, f"{attr}: values by URL (':<') are not accepted")
    if kind == ":":
        try:
            return base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise _LdifError(number, f"{attr}: the base64 value is invalid") from None
    if "\r" in value:
        raise _LdifError(number, f"{attr}: stray carriage return")
    return value.encode()


def _ldif_person(record: list[tuple[int, str]], *, first_record: bool) -> _Person | str | None:
    """A record as a person; None for a lone version line or a non-person entry."""
    attrs: dict[str, list[str]] = {}
    try:
        if first_record and record[0][1].lower().startswith("version:"):
            # "version: 1" opens the file, on its own or right above the first dn.
            if record[0][1][len("version:") :].strip() != "1":
                raise _LdifError(record[0][0], "only LDIF version 1 is supported")
            record = record[1:]
            if not record:
                return None
        start = record[0][0]
        for index, (number, line) in enumerate(record):
            match = _LDIF_LINE_RE.fullmatch(line)
            if match is None:
                raise _LdifError(number, "expected 'attribute: value'")
            attr, options = match["attr"].lower(), match["options"]
            raw = _ldif_value(number, attr, match["kind"], match["value"])
            if index == 0:
                if attr != "dn":
                    raise _LdifError(number, "a record must start with 'dn:'")
                continue
            if attr == "dn":
                raise _LdifError(number, "a second 'dn:' in one record")
            if attr == "control":
                raise _LdifError(number, "LDIF controls are not accepted")
            if attr == "changetype":
                if raw.strip().lower() != b"add":
                    raise _LdifError(number, "only content or 'changetype: add' records")
                continue
            if options or attr not in _LDIF_MAPPED:
                continue  # unmapped (userPassword, jpegPhoto, cn;lang-de, …): never stored
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _LdifError(number, f"{attr}: the value is not UTF-8 text") from None
            attrs.setdefault(attr, []).append(text)
        classes = {c.strip().lower() for c in attrs.get("objectclass", [])}
        if "uid" not in attrs and not classes & _PERSON_CLASSES:
            return None  # a container (ou=people, …) in a full export, not a person
        for attr in _LDIF_SINGLE:
            if len(attrs.get(attr, [])) > 1:
                raise _LdifError(start, f"{attr} has several values")
        single = {key: attrs[attr][0] for attr, key in _LDIF_SINGLE.items() if attr in attrs}
        first = {key: attrs[attr][0] for attr, key in _LDIF_FIRST.items() if attr in attrs}
        if "login" not in single:
            raise _LdifError(start, "the entry has no uid")
        if "mail" not in single:
            raise _LdifError(start, "the entry has no mail")
        name = single.get("display_name") or first.get("cn")
        if not name:
            raise _LdifError(start, "the entry has neither displayName nor cn")
        try:
            # An LDIF entry is a full snapshot: absent attributes are cleared on update.
            return _person(
                start,
                login=single["login"],
                mail=single["mail"],
                name=name,
                optional={
                    "given_name": single.get("given_name"),
                    "surname": single.get("surname"),
                    "organisation": first.get("organisation"),
                    "site": first.get("site"),
                    "employee_id": single.get("employee_id"),
                },
                groups=attrs.get("memberof", []),
                enabled=None,
            )
        except InputError as exc:
            raise _LdifError(start, str(exc)) from None
    except _LdifError as exc:
        return str(exc)


def _ldif_people(data: bytes) -> Iterator[_Person | str]:
    text = decode_upload(data, what="LDIF file")
    for index, (record, broken) in enumerate(_ldif_records(text)):
        if broken is not None:
            yield broken
            continue
        person = _ldif_person(record, first_record=index == 0)
        if person is not None:
            yield person


# -- the import ------------------------------------------------------------------------------


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _add_error(report: ImportReport, message: str) -> None:
    if len(report.errors) < MAX_REPORTED_ERRORS:
        report.errors.append(message)
    elif len(report.errors) == MAX_REPORTED_ERRORS:
        report.errors.append("… more errors not shown: fix these and import again")


_COLUMNS = (
    EmbeddedEntry.id,
    EmbeddedEntry.login,
    EmbeddedEntry.dn,
    EmbeddedEntry.mail,
    EmbeddedEntry.display_name,
    EmbeddedEntry.given_name,
    EmbeddedEntry.surname,
    EmbeddedEntry.organisation,
    EmbeddedEntry.site,
    EmbeddedEntry.enabled,
    EmbeddedEntry.groups,
    EmbeddedEntry.employee_id,
)


def import_people(db: Database, data: bytes, *, kind: Literal["csv", "ldif"]) -> ImportReport:
    """Add or update people from a CSV or LDIF file, in one transaction.

    CSV: header ``login,mail,name[,given_name,surname,organisation,site,groups,
    employee_id,enabled]`` (groups separated by ';'); columns the file lacks are left
    unchanged on existing entries. LDIF: uid, mail, displayName (or cn), givenName, sn,
    o, ou, memberOf, employeeNumber. Bad records are reported ("line N: why") and
    skipped; a file-level problem (size, encoding, header) raises InputError and
    changes nothing. People missing from the file are kept."""
    if kind == "csv":
        parsed = list(_csv_people(data))
    elif kind == "ldif":
        parsed = list(_ldif_people(data))
    else:
        raise InputError(f"unknown import format {kind!r}: use csv or ldif")

    report = ImportReport()
    with db.transaction() as session:
        _apply(session, parsed, report)
    return report


def _apply(session: Session, parsed: list[_Person | str], report: ImportReport) -> None:
    people = [p for p in parsed if isinstance(p, _Person)]
    existing: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted({p.login for p in people})):
        rows = session.execute(select(*_COLUMNS).where(EmbeddedEntry.login.in_(chunk)))
        for found in rows.mappings():
            existing[found["login"]] = dict(found)
    # Who holds each mail now: two entries with one mail would make lookups ambiguous.
    mail_owner: dict[str, str] = {}
    owners = session.execute(
        select(EmbeddedEntry.login, EmbeddedEntry.mail).where(EmbeddedEntry.mail.is_not(None))
    )
    for login, mail in owners:
        mail_owner[str(mail).lower()] = login

    seen_login: dict[str, int] = {}
    seen_mail: dict[str, int] = {}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for item in parsed:
        if isinstance(item, str):
            _add_error(report, item)
            continue
        mail = str(item.values["mail"]).lower()
        if item.login in seen_login:
            _add_error(
                report,
                f"line {item.line}: login {item.login!r} is already on line "
                f"{seen_login[item.login]}",
            )
            continue
        if mail in seen_mail:
            _add_error(
                report, f"line {item.line}: mail {mail!r} is already on line {seen_mail[mail]}"
            )
            continue
        owner = mail_owner.get(mail)
        if owner is not None and owner != item.login:
            _add_error(report, f"line {item.line}: mail {mail!r} already belongs to {owner!r}")
            continue
        seen_login[item.login] = item.line
        seen_mail[mail] = item.line
        current = existing.get(item.login)
        if current is None:
            row = {
                "login": item.login,
                "dn": embedded_dn(item.login),
                "mail": None,
                "display_name": None,
                "given_name": None,
                "surname": None,
                "organisation": None,
                "site": None,
                "enabled": True,
                "groups": "[]",
                "employee_id": None,
            }
            row.update(item.values)
            inserts.append(row)
            report.added += 1
        else:
            merged = {**current, **item.values}
            if merged != current:
                old_mail = current["mail"]
                if old_mail and mail_owner.get(str(old_mail).lower()) == item.login:
                    del mail_owner[str(old_mail).lower()]
                updates.append(merged)
                report.updated += 1
        mail_owner[mail] = item.login
    for batch in _chunks(updates):
        session.execute(update(EmbeddedEntry), list(batch))
    for batch in _chunks(inserts):
        session.execute(insert(EmbeddedEntry), list(batch))


# -- the directory -------------------------------------------------------------------------


def _entry(row: EmbeddedEntry) -> DirectoryEntry:
    try:
        groups = json.loads(row.groups or "[]")
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

    def __init__(self, db: Database, *, domains: tuple[str, ...] = ()) -> None:
        self.db = db
        self.name = NAME
        self.domains = tuple(d.strip().lower() for d in domains if d.strip())

    # A database failure here is the directory being unavailable to its callers, who
    # handle DirectoryError (retry the publish job, "directory unavailable" at logon).
    @contextmanager
    def _reading(self) -> Iterator[Session]:
        try:
            with self.db.session() as session:
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
        if not login or len(login) > _LOGIN_MAX or _bad_char(login):
            return None  # cannot be stored: no need to ask
        return self._one(EmbeddedEntry.login == login.lower())

    def find_by_mail(self, mail: str) -> DirectoryEntry | None:
        mail = mail.strip()
        if not mail or "@" not in mail or len(mail) > _MAIL_MAX or _bad_char(mail):
            return None
        # The exact match uses the index; the lower() one catches a differently cased query.
        return self._one(EmbeddedEntry.mail == mail) or self._one(
            func.lower(EmbeddedEntry.mail) == mail.lower()
        )

    def search(self, text: str, *, limit: int = 50) -> list[DirectoryEntry]:
        text = text.strip()
        if not text:
            raise InputError("type at least one character to search for")
        if len(text) > MAX_SEARCH:
            raise InputError(f"the search text is longer than {MAX_SEARCH} characters")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InputError("the search limit must be a positive whole number")
        if _bad_char(text):
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
        with self._reading() as session:
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
