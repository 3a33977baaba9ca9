"""Checks on people's data from outside (imports, the HR list): logins, mail, names."""

from __future__ import annotations

import re
import unicodedata
from typing import TypeVar

from ldap3.utils.dn import escape_rdn

from mailpki.errors import InputError

NAME = "embedded"
DN_SUFFIX = "ou=people,o=embedded"
MAX_IMPORT_BYTES = 50 * 1024 * 1024
MAX_REPORTED_ERRORS = 1000  # a file of garbage must not produce a report larger than itself
MAX_SEARCH = 100
MAX_LIMIT = 1000
CHUNK = 500  # rows per IN (...) / bulk statement: below every driver's parameter limit
LOGIN_MAX = 128
MAIL_MAX = 254  # RFC 5321 path limit
NAME_MAX = 256
GROUPS_MAX = 1000

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


def has_bad_char(value: str) -> bool:
    """Control, unassigned, surrogate, line/paragraph separator or bidi control."""
    return any(
        unicodedata.category(ch) in ("Cc", "Cs", "Cn", "Zl", "Zp") or ch in _BIDI_CONTROLS
        for ch in value
    )


def check_text(value: str, *, what: str, max_len: int = NAME_MAX) -> str:
    """A printable single-line text of at most `max_len` characters, stripped; may be ""."""
    value = value.strip()
    if len(value) > max_len:
        raise InputError(f"{what} is longer than {max_len} characters")
    if has_bad_char(value):
        raise InputError(f"{what} contains control characters")
    return value


def check_mail(value: str) -> str:
    """A plain addr-spec (local@domain): no display name, comments, quotes, commas or CR/LF."""
    mail = value.strip()
    if not mail:
        raise InputError("the mail address is empty")
    if len(mail) > MAIL_MAX:
        raise InputError(f"the mail address is longer than {MAIL_MAX} characters")
    if has_bad_char(mail) or any(ch.isspace() for ch in mail):
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
    if len(login) > LOGIN_MAX:
        raise InputError(f"the login is longer than {LOGIN_MAX} characters")
    if not _LOGIN_RE.fullmatch(login):
        raise InputError(
            f"login {login!r} may contain only letters, digits, '.', '_' and '-' "
            "(and starts with a letter or digit)"
        )
    return login.lower()


def embedded_dn(login: str) -> str:
    """The DN an embedded entry is known by (RFC 4514 escaped)."""
    return f"uid={escape_rdn(login)!s},{DN_SUFFIX}"
