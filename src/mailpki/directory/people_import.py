"""Importing people into the embedded directory from CSV or LDIF.

Everything imported is outside input: each record is validated strictly, a bad record is
reported with its line number and skipped, and the whole import is one transaction (all
good records or nothing).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from mailpki.directory.validation import (
    CHUNK,
    GROUPS_MAX,
    MAX_IMPORT_BYTES,
    MAX_REPORTED_ERRORS,
    NAME_MAX,
    T,
    check_login,
    check_mail,
    check_text,
    embedded_dn,
)
from mailpki.errors import InputError
from mailpki.store.db import Database
from mailpki.store.models import EmbeddedEntry

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
    removed: int = 0  # a full import: people the file no longer lists


def _optional(value: str | None, *, what: str, max_len: int = NAME_MAX) -> str | None:
    if value is None:
        return None
    return check_text(value, what=what, max_len=max_len) or None


def _groups(values: Iterable[str]) -> str:
    groups: list[str] = []
    for value in values:
        group = check_text(value, what="a group", max_len=NAME_MAX)
        if group and group not in groups:
            groups.append(group)
    if len(groups) > GROUPS_MAX:
        raise InputError(f"more than {GROUPS_MAX} groups")
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


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
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


def import_people(
    db: Database, data: bytes, *, kind: Literal["csv", "ldif"], full: bool = False
) -> ImportReport:
    """Add or update people from a CSV or LDIF file, in one transaction.

    CSV: header ``login,mail,name[,given_name,surname,organisation,site,groups,
    employee_id,enabled]`` (groups separated by ';'); columns the file lacks are left
    unchanged on existing entries. LDIF: uid, mail, displayName (or cn), givenName, sn,
    o, ou, memberOf, employeeNumber. Bad records are reported ("line N: why") and
    skipped; a file-level problem (size, encoding, header) raises InputError and
    changes nothing. People missing from the file are kept, unless `full`: then the file
    is the whole directory and they are removed (they left) - but only from a file
    without a single bad record, which could be a truncated or partial export."""
    if kind == "csv":
        parsed = list(_csv_people(data))
    elif kind == "ldif":
        parsed = list(_ldif_people(data))
    else:
        raise InputError(f"unknown import format {kind!r}: use csv or ldif")

    report = ImportReport()
    if full and any(isinstance(p, str) for p in parsed):
        raise InputError(
            "a full import removes everyone the file does not list, so it must have no "
            "bad records: fix them (or import without --full) and try again"
        )
    with db.transaction() as session:
        _apply(session, parsed, report)
        if full:
            listed = {p.login for p in parsed if isinstance(p, _Person)}
            if not listed:
                raise InputError("a full import of an empty file would remove everyone")
            gone = [
                login
                for login in session.scalars(select(EmbeddedEntry.login))
                if login not in listed
            ]
            for batch in _chunks(gone):
                session.execute(delete(EmbeddedEntry).where(EmbeddedEntry.login.in_(batch)))
            report.removed = len(gone)
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
