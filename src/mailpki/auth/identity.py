"""Who a logon proved someone to be, and the one interface every authenticator has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from mailpki.directory.entry import DirectoryEntry

__all__ = ["Authenticator", "Identity", "Method"]

Method = Literal["directory", "pin"]


@dataclass(frozen=True)
class Identity:
    """A successful logon: the person's directory entry and how they proved it."""

    entry: DirectoryEntry
    method: Method


class Authenticator(Protocol):
    def authenticate(self, login: str, secret: str, *, source: str = "") -> Identity:
        """The identity behind `login` if `secret` is right.

        Raises AuthenticationError whose message does not tell whether `login` exists
        ("wrong login or password", "wrong employee id or PIN"), except for a lockout
        ("too many failed logons: try again after HH:MM UTC"). `source` (the client
        address) is a second lockout key next to the login."""
        ...
