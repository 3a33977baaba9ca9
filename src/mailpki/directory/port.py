"""The one interface every directory adapter implements."""

from __future__ import annotations

from typing import Protocol

from mailpki.directory.entry import DirectoryEntry


class Directory(Protocol):
    """Lookups return None for "no such person"; an unreachable or slow directory raises
    DirectoryError (never None: "not found" and "could not ask" must not be confused)."""

    name: str
    domains: tuple[str, ...]  # mail domains routed to this directory

    def find_by_login(self, login: str) -> DirectoryEntry | None:
        """`login` as people type it: uid; for AD also sAMAccountName, UPN, DOMAIN\\user."""
        ...

    def find_by_mail(self, mail: str) -> DirectoryEntry | None: ...

    def find_by_principal(self, user: str, realm: str) -> DirectoryEntry | None:
        """The person a Kerberos principal `user@realm` belongs to (the realm is this
        directory's, already checked by the caller)."""
        ...

    def find_many_by_mail(self, mails: list[str]) -> dict[str, DirectoryEntry | None]:
        """Each (lowercased) mail's entry, or None when the directory has no such person.
        All or nothing: a timeout, an outage or a truncated (size-limited) answer raises
        DirectoryError, so a partial answer is never read as "these people are gone"."""
        ...

    def search(self, text: str, *, limit: int = 50) -> list[DirectoryEntry]:
        """Entries whose name, mail or login starts with `text` (the address-list search),
        at most `limit`, sorted by display name."""
        ...

    def verify_password(self, entry: DirectoryEntry, password: str) -> bool:
        """Bind as the entry with `password`: True if accepted, False if refused.
        Empty passwords are refused before any bind (unauthenticated-bind trap)."""
        ...

    def publish(self, dn: str, certificate_der: bytes) -> bool:
        """Add the certificate to userCertificate;binary and userSMIMECertificate of `dn`.
        Idempotent; False if the entry does not exist."""
        ...

    def unpublish(self, dn: str, certificate_der: bytes) -> bool:
        """Remove exactly that certificate from both attributes. Idempotent."""
        ...

    def certificates(self, dn: str) -> list[bytes]:
        """The DER certificates in userCertificate;binary of `dn`."""
        ...

    def close(self) -> None: ...
