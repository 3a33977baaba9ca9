"""Local operator accounts of the console: login, argon2id password and a TOTP code.

For instances without an LDAP directory. Every refusal a stranger could probe (unknown
login, wrong password, wrong, malformed or replayed code) is the one message
WRONG_OPERATOR_LOGON and is counted by the portal's lockout (LoginLimiter), against the
login and against login+client address. A code is accepted once: its time step must be
newer than the last accepted one, written by a conditional update (two racing logons with
one code: one wins).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError
from sqlalchemy import or_, select, update

from mailpki.auth.limiter import LoginLimiter, limiter_keys
from mailpki.auth.totp import matching_step
from mailpki.errors import AuthenticationError, InputError
from mailpki.keystore.sealed import Sealed, SecretSealer
from mailpki.policy.operator_roles import OperatorRole, parse_operator_role
from mailpki.store.db import Database
from mailpki.store.models import OperatorAccount

__all__ = [
    "MAX_CODE",
    "MAX_OPERATOR_PASSWORD",
    "WRONG_OPERATOR_LOGON",
    "OperatorAuthenticator",
    "OperatorIdentity",
    "check_operator_login",
    "operator_hasher",
    "totp_bound_to",
]

WRONG_OPERATOR_LOGON = "wrong login, password or code"
MAX_OPERATOR_PASSWORD = 1024
MAX_CODE = 16  # "123 456" and a little slack; anything longer is not a code
LOGIN_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_LIMITER_PREFIX = "operator\x1f"  # an operator login locks apart from a directory login


def operator_hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's defaults (RFC 9106's second choice: 3 passes, 64 MiB)."""
    return PasswordHasher()


def check_operator_login(login: str) -> str:
    """A login as stored: 1-64 lower-case letters, digits, '.', '_' or '-'."""
    if not LOGIN_PATTERN.fullmatch(login):
        raise InputError(
            "an operator login is 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. jane.doe)"
        )
    return login


def totp_bound_to(login: str) -> bytes:
    """The associated data of an account's sealed TOTP secret: its login."""
    return b"mailpki operator totp\x00" + login.encode()


@dataclass(frozen=True)
class OperatorIdentity:
    """A successful operator logon."""

    login: str
    role: OperatorRole


class OperatorAuthenticator:
    def __init__(
        self,
        db: Database,
        limiter: LoginLimiter,
        sealer: SecretSealer,
        *,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self._limiter = limiter
        self._sealer = sealer
        self._hasher = hasher or operator_hasher()
        self._clock = clock
        # Verified against when the login is unknown, so the answer takes as long.
        self._dummy_hash = self._hasher.hash("not a password of anyone")

    def _refuse(self, keys: tuple[str, ...]) -> NoReturn:
        for key in keys:
            self._limiter.failed(key)
        raise AuthenticationError(WRONG_OPERATOR_LOGON)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (Argon2Error, InvalidHashError):
            return False

    def authenticate(
        self, login: str, password: str, code: str, *, source: str = ""
    ) -> OperatorIdentity:
        """The operator behind `login` if the password and the TOTP code are right.

        AuthenticationError(WRONG_OPERATOR_LOGON) for every wrong part, or the lockout's
        message; a KeyStoreError if the TOTP secret does not open (an instance problem,
        not the operator's, and not counted)."""
        typed = login.strip().lower()
        keys = limiter_keys(_LIMITER_PREFIX + typed[:64], source)
        for key in keys:
            self._limiter.check(key)
        if (
            not LOGIN_PATTERN.fullmatch(typed)
            or not password
            or len(password) > MAX_OPERATOR_PASSWORD
            or len(code) > MAX_CODE
        ):
            self._refuse(keys)
        with self.db.session() as session:
            row = session.scalar(select(OperatorAccount).where(OperatorAccount.login == typed))
            found = (
                None
                if row is None
                else (
                    row.id,
                    row.role,
                    row.password_hash,
                    Sealed(row.totp_salt, row.totp_nonce, row.totp_secret_sealed),
                    row.last_totp_step,
                )
            )
        right = self._verify(found[2] if found else self._dummy_hash, password)
        if found is None or not right:
            self._refuse(keys)
        row_id, role, password_hash, sealed, last_step = found
        secret = self._sealer.open(sealed, totp_bound_to(typed))
        step = matching_step(secret, code, self._clock())
        if step is None or (last_step is not None and step <= last_step):
            self._refuse(keys)
        with self.db.transaction() as session:
            # Conditional: a code (step) is used once, even by two logons at the same time;
            # a password changed meanwhile voids this logon too.
            result = session.execute(
                update(OperatorAccount)
                .where(
                    OperatorAccount.id == row_id,
                    OperatorAccount.password_hash == password_hash,
                    or_(
                        OperatorAccount.last_totp_step.is_(None),
                        OperatorAccount.last_totp_step < step,
                    ),
                )
                .values(last_totp_step=step, last_logon_at=datetime.now(UTC))
            )
            used = int(result.rowcount) == 1  # type: ignore[attr-defined]
        if not used:
            self._refuse(keys)
        for key in keys:
            self._limiter.succeeded(key)
        return OperatorIdentity(typed, parse_operator_role(role))
