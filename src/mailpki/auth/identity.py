"""Who a logon proved someone to be, and the one interface every authenticator has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import AuthenticationError

__all__ = ["Authenticator", "Identity", "Method", "check_expected_mail"]

Method = Literal["directory", "pin", "kerberos", "oidc"]


@dataclass(frozen=True)
class Identity:
    """A successful logon: the person's directory entry and how they proved it."""

    entry: DirectoryEntry
    method: Method


class Authenticator(Protocol):
    def authenticate(
        self, login: str, secret: str, *, source: str = "", expect_mail: str | None = None
    ) -> Identity:
        """The identity behind `login` if `secret` is right.

        With `expect_mail` (an invitation's address) the identity must have that mail,
        checked before anything one-time (a PIN) is spent.

        Raises AuthenticationError whose message does not tell whether `login` exists
        ("wrong login or password", "wrong employee id or PIN"), except for a lockout
        ("too many failed logons: try again after HH:MM UTC"). `source` (the client
        address) is a second lockout key next to the login."""
        ...


def check_expected_mail(entry: DirectoryEntry, expect_mail: str | None) -> None:
    """Refuse an identity that is not the one an invitation was sent to (said only after
    the secret proved who it is)."""
    if expect_mail is not None and (entry.mail or "").lower() != expect_mail.lower():
        raise AuthenticationError(
            "this invitation was sent to someone else: log on with your own, or without "
            "an invitation link"
        )
