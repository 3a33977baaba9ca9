"""Logon with the directory password (an LDAP bind as the person)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from mailpki.auth.identity import Identity, check_expected_mail
from mailpki.auth.limiter import LoginLimiter, limiter_keys
from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import AuthenticationError

__all__ = ["MAX_LOGIN", "MAX_PASSWORD", "WRONG_LOGIN", "DirectoryAuthenticator"]

MAX_PASSWORD = 1024
MAX_LOGIN = 256
WRONG_LOGIN = "wrong login or password"


class DirectoryAuthenticator:
    """`find` is the registry's routing lookup, `verify` the directory's password check.

    A DirectoryError from either propagates uncounted: an outage is not a wrong password."""

    def __init__(
        self,
        find: Callable[[str], DirectoryEntry | None],
        verify: Callable[[DirectoryEntry, str], bool],
        limiter: LoginLimiter,
    ) -> None:
        self._find = find
        self._verify = verify
        self._limiter = limiter

    def _refuse(self, keys: tuple[str, ...]) -> NoReturn:
        for key in keys:
            self._limiter.failed(key)
        raise AuthenticationError(WRONG_LOGIN)

    def authenticate(
        self, login: str, secret: str, *, source: str = "", expect_mail: str | None = None
    ) -> Identity:
        keys = limiter_keys(login, source)
        for key in keys:
            self._limiter.check(key)
        # An empty password would be an unauthenticated bind, which LDAP servers accept;
        # a huge one is a denial of service. Refused before anything reaches the directory.
        if not secret or len(secret) > MAX_PASSWORD:
            self._refuse(keys)
        if not login.strip() or len(login) > MAX_LOGIN:
            self._refuse(keys)
        entry = self._find(login)
        if entry is None:
            self._refuse(keys)
        if not self._verify(entry, secret):
            self._refuse(keys)
        # Only after the password proved who it is: otherwise this would reveal accounts.
        if not entry.enabled:
            raise AuthenticationError("the account is disabled")
        check_expected_mail(entry, expect_mail)
        for key in keys:
            self._limiter.succeeded(key)
        return Identity(entry=entry, method="directory")
