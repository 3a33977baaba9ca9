"""Invitations from the console: one person, or a CSV file of logins.

The CSV has a header row with a `login` column (other columns are ignored). Every bad
row is reported with its line number and why; the good rows are invited all the same.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from mailpki.errors import InputError
from mailpki.instance.console_access import ConsoleUser, require
from mailpki.instance.instance import Instance
from mailpki.instance.invitations import invite_users
from mailpki.policy.operator_roles import Permission

__all__ = ["InviteOutcome", "invite", "invite_csv", "read_logins_csv"]

MAX_CSV_BYTES = 4 * 1024 * 1024
MAX_ROWS = 20_000
MAX_LOGIN = 256


@dataclass
class InviteOutcome:
    invited: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "line N: why", or "LOGIN: why"
    notes: list[str] = field(default_factory=list)


def _check_login(value: str) -> str:
    login = value.strip()
    if not login:
        raise InputError("no login")
    if len(login) > MAX_LOGIN:
        raise InputError(f"the login is longer than {MAX_LOGIN} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in login):
        raise InputError("the login has control characters")
    return login


def read_logins_csv(data: bytes) -> tuple[dict[str, int], list[str]]:
    """(login -> its line number, problems "line N: why") from a CSV upload.

    A file that cannot be read at all (not UTF-8, no `login` column, too large) raises
    InputError and nothing is invited."""
    if len(data) > MAX_CSV_BYTES:
        raise InputError(f"the file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the file is not UTF-8 text") from None
    if "\x00" in text:
        raise InputError("the file is not a CSV text file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"line 1: {exc}") from None
    names = [h.strip().lower() for h in header or []]
    if "login" not in names:
        raise InputError("the first line must be a header with a 'login' column")
    column = names.index("login")
    logins: dict[str, int] = {}
    problems: list[str] = []
    rows = 0
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"line {line}: {exc}")
            break  # the reader cannot go on past a broken quote
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        rows += 1
        if rows > MAX_ROWS:
            raise InputError(f"the file has more than {MAX_ROWS} rows: split it")
        try:
            login = _check_login(row[column] if column < len(row) else "")
        except InputError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        if login in logins:
            problems.append(f"line {line}: {login} is already on line {logins[login]}")
            continue
        logins[login] = line
    return logins, problems


def invite(
    instance: Instance, user: ConsoleUser | None, logins: list[str], *, resend: bool
) -> InviteOutcome:
    """Invite (or re-invite with `resend`) people by login; audited as console:LOGIN."""
    operator = require(user, Permission.INVITE)
    checked: list[str] = []
    outcome = InviteOutcome()
    for value in logins:
        try:
            checked.append(_check_login(value))
        except InputError as exc:
            outcome.problems.append(f"{value[:40]!r}: {exc}")
    if checked:
        _run(instance, operator, checked, resend, outcome, lines=None)
    return outcome


def invite_csv(
    instance: Instance, user: ConsoleUser | None, data: bytes, *, resend: bool
) -> InviteOutcome:
    operator = require(user, Permission.INVITE)
    logins, problems = read_logins_csv(data)
    outcome = InviteOutcome(problems=problems)
    if logins:
        _run(instance, operator, list(logins), resend, outcome, lines=logins)
    return outcome


def _run(
    instance: Instance,
    operator: ConsoleUser,
    logins: list[str],
    resend: bool,
    outcome: InviteOutcome,
    *,
    lines: dict[str, int] | None,
) -> None:
    report = invite_users(
        instance, logins, all_people=False, filter_text=None, resend=resend, actor=operator.actor
    )
    instance.seal()
    outcome.invited.extend(report.sent)

    def located(message: str) -> str:
        login = message.split(":", 1)[0]
        if lines is not None and login in lines:
            return f"line {lines[login]}: {message}"
        return message

    outcome.problems.extend(located(m) for m in report.errors)
    outcome.notes.extend(located(m) for m in [*report.skipped, *report.notes])
