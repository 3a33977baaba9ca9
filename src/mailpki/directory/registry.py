"""Several directories in one instance, and which one a login or mail belongs to.

Configured LDAP directories live in the `directories` table (their service-account
password in a file the row names). With none configured, the embedded directory is the
directory. A mail is routed by its domain; `DOMAIN\\user` by the NetBIOS domain;
`user@domain` by the domain; a bare login is looked up in every directory and must be
found in exactly one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mailpki.directory.embedded import EmbeddedDirectory
from mailpki.directory.entry import MAPPINGS, DirectoryEntry
from mailpki.directory.port import Directory
from mailpki.errors import ConfigError, DirectoryError, InputError, NotFoundError, UnknownRealm
from mailpki.store.db import Database
from mailpki.store.models import DirectoryConfig

EMBEDDED = "embedded"


@dataclass(frozen=True)
class DirectorySettings:
    name: str
    flavour: str
    url: str
    base_dn: str
    bind_dn: str
    bind_password_file: str
    domains: tuple[str, ...]
    netbios_domain: str = ""
    starttls: bool = False
    ca_file: str = ""
    timeout_seconds: int = 5
    mapping: str = "{}"
    kerberos_realm: str = ""  # principals of this Kerberos realm are looked up here

    def check(self) -> None:
        """Refuse settings that could never work, before any connection is tried."""
        if self.flavour not in MAPPINGS:
            raise InputError(f"flavour must be one of {', '.join(MAPPINGS)}")
        if self.name == EMBEDDED or not self.name.replace("-", "").isalnum():
            raise InputError("a directory name is letters, digits and '-', and not 'embedded'")
        if not self.url.startswith(("ldap://", "ldaps://")):
            raise InputError("the directory URL must be ldap:// or ldaps://")
        if self.url.startswith("ldap://") and not self.starttls:
            raise InputError(
                "refusing to send passwords over plain ldap://: use ldaps:// or --starttls"
            )
        if not self.domains:
            raise InputError("a directory needs at least one mail domain (--domain)")
        if self.kerberos_realm:
            check_realm(self.kerberos_realm)
        _read_password(self.bind_password_file)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "flavour": self.flavour, "url": self.url, "base_dn": self.base_dn,
            "bind_dn": self.bind_dn, "domains": list(self.domains),
            "netbios_domain": self.netbios_domain, "starttls": self.starttls,
            "ca_file": self.ca_file, "timeout_seconds": self.timeout_seconds,
            "kerberos_realm": self.kerberos_realm,
        }  # fmt: skip


_REALM = re.compile(r"[A-Z0-9](?:[A-Z0-9.-]{0,253}[A-Z0-9])?")


def check_realm(realm: str) -> str:
    """A Kerberos realm as directories are mapped to it: upper case, DNS-like."""
    if not _REALM.fullmatch(realm) or ".." in realm:
        raise InputError(
            f"{realm!r} is not a Kerberos realm: upper-case letters, digits, '.' and '-', "
            "such as CORP.EXAMPLE.COM"
        )
    return realm


def _read_password(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the directory bind password file {path}: {exc}") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ConfigError(f"the directory bind password file {path} is empty")
    return password


def open_directory(settings: DirectorySettings) -> Directory:
    from mailpki.directory.ldap import LdapDirectory

    try:
        overrides = json.loads(settings.mapping or "{}")
    except json.JSONDecodeError:
        raise ConfigError(f"directory {settings.name}: its attribute mapping is not JSON") from None
    return LdapDirectory(
        name=settings.name,
        url=settings.url,
        base_dn=settings.base_dn,
        bind_dn=settings.bind_dn,
        bind_password=_read_password(settings.bind_password_file),
        flavour=settings.flavour,  # type: ignore[arg-type]
        domains=settings.domains,
        netbios_domain=settings.netbios_domain,
        starttls=settings.starttls,
        ca_file=Path(settings.ca_file) if settings.ca_file else None,
        timeout=float(settings.timeout_seconds),
        mapping=MAPPINGS[settings.flavour].with_overrides(overrides),
    )


class DirectoryRegistry:
    def __init__(self, db: Database, *, read_db: Callable[[], Database] | None = None) -> None:
        self.db = db
        self.read_db = read_db  # where the embedded directory's searches read
        self._directories: list[Directory] | None = None
        self._realms: dict[str, str] = {}  # Kerberos realm -> directory name

    # -- configuration ------------------------------------------------------------------

    def settings(self) -> list[DirectorySettings]:
        with self.db.session() as session:
            rows = session.scalars(select(DirectoryConfig).order_by(DirectoryConfig.position))
            return [
                DirectorySettings(
                    name=r.name,
                    flavour=r.flavour,
                    url=r.url,
                    base_dn=r.base_dn,
                    bind_dn=r.bind_dn,
                    bind_password_file=r.bind_password_file,
                    domains=tuple(d for d in r.domains.split(",") if d),
                    netbios_domain=r.netbios_domain,
                    starttls=r.starttls,
                    ca_file=r.ca_file,
                    timeout_seconds=r.timeout_seconds,
                    mapping=r.mapping,
                    kerberos_realm=r.kerberos_realm,
                )
                for r in rows
            ]

    def add(self, settings: DirectorySettings) -> None:
        """Store a directory after checking the settings (the caller tests the connection)."""
        settings.check()
        with self.db.transaction() as session:
            if session.get(DirectoryConfig, settings.name) is not None:
                raise InputError(f"a directory named {settings.name} exists; remove it first")
            taken = {
                d
                for row in session.scalars(select(DirectoryConfig))
                for d in row.domains.split(",")
            }
            clash = taken & set(settings.domains)
            if clash:
                raise InputError(f"domain {', '.join(sorted(clash))} is already routed elsewhere")
            realms = {row.kerberos_realm for row in session.scalars(select(DirectoryConfig))}
            if settings.kerberos_realm and settings.kerberos_realm in realms:
                raise InputError(
                    f"Kerberos realm {settings.kerberos_realm} is already mapped to another "
                    "directory"
                )
            position = int(session.scalar(select(func.count()).select_from(DirectoryConfig)) or 0)
            session.add(
                DirectoryConfig(
                    name=settings.name,
                    position=position,
                    flavour=settings.flavour,
                    url=settings.url,
                    base_dn=settings.base_dn,
                    bind_dn=settings.bind_dn,
                    bind_password_file=str(Path(settings.bind_password_file).resolve()),
                    domains=",".join(settings.domains),
                    netbios_domain=settings.netbios_domain,
                    starttls=settings.starttls,
                    ca_file=settings.ca_file,
                    timeout_seconds=settings.timeout_seconds,
                    mapping=settings.mapping,
                    kerberos_realm=settings.kerberos_realm,
                    created_at=datetime.now(UTC),
                )
            )
        self.close()

    def remove(self, name: str) -> None:
        with self.db.transaction() as session:
            row = session.get(DirectoryConfig, name)
            if row is None:
                raise NotFoundError(f"no directory named {name}")
            session.delete(row)
        self.close()

    # -- the directories ----------------------------------------------------------------

    def directories(self) -> list[Directory]:
        if self._directories is None:
            settings = self.settings()
            configured = [open_directory(s) for s in settings]
            self._realms = {s.kerberos_realm: s.name for s in settings if s.kerberos_realm}
            self._directories = configured or [EmbeddedDirectory(self.db, read_db=self.read_db)]
        return self._directories

    def named(self, name: str) -> Directory:
        for directory in self.directories():
            if directory.name == name:
                return directory
        raise NotFoundError(f"no directory named {name}")

    def for_mail(self, mail: str) -> Directory | None:
        domain = mail.rsplit("@", 1)[-1].strip().lower()
        for directory in self.directories():
            # The embedded directory, when it is the only one, holds every domain.
            if domain in directory.domains or not directory.domains:
                return directory
        return None

    def find_by_mail(self, mail: str) -> DirectoryEntry | None:
        directory = self.for_mail(mail)
        return None if directory is None else directory.find_by_mail(mail.strip().lower())

    def find_many_by_mail(self, mails: list[str]) -> dict[str, DirectoryEntry | None]:
        """Each mail's entry (None: not in its directory); mails no directory is routed
        for are left out. Any directory's failure raises DirectoryError for the whole."""
        routed: dict[str, list[str]] = {}
        by_name: dict[str, Directory] = {}
        for mail in {m.strip().lower() for m in mails if m.strip()}:
            directory = self.for_mail(mail)
            if directory is not None:
                routed.setdefault(directory.name, []).append(mail)
                by_name[directory.name] = directory
        found: dict[str, DirectoryEntry | None] = {}
        for name, batch in routed.items():
            found.update(by_name[name].find_many_by_mail(batch))
        return found

    def find_by_login(self, login: str) -> DirectoryEntry | None:
        """Route `login`; a bare login found in two directories is an error."""
        login = login.strip()
        if not login or len(login) > 256:
            return None
        if "@" in login:
            directory = self.for_mail(login)
            return None if directory is None else directory.find_by_login(login)
        found = [e for d in self.directories() if (e := d.find_by_login(login)) is not None]
        if len(found) > 1:
            names = ", ".join(e.directory for e in found)
            raise DirectoryError(
                f"login {login!r} exists in several directories ({names}): use user@domain"
            )
        return found[0] if found else None

    def for_realm(self, realm: str) -> Directory | None:
        """The directory mapped to Kerberos realm `realm` (directory add --kerberos-realm)."""
        directories = self.directories()
        name = self._realms.get(realm)
        return next((d for d in directories if name is not None and d.name == name), None)

    def find_by_principal(self, user: str, realm: str) -> DirectoryEntry | None:
        """The entry of Kerberos principal user@realm; UnknownRealm if no directory is
        mapped to the realm."""
        directory = self.for_realm(realm)
        if directory is None:
            raise UnknownRealm(f"the Kerberos realm {realm[:100]} is not mapped to a directory")
        return directory.find_by_principal(user, realm)

    def search(self, text: str, *, limit: int = 50) -> list[DirectoryEntry]:
        results: list[DirectoryEntry] = []
        for directory in self.directories():
            results.extend(directory.search(text, limit=limit))
        results.sort(key=lambda e: ((e.display_name or e.login).lower(), e.directory))
        return results[:limit]

    def verify_password(self, entry: DirectoryEntry, password: str) -> bool:
        return self.named(entry.directory).verify_password(entry, password)

    def __iter__(self) -> Iterator[Directory]:
        return iter(self.directories())

    def close(self) -> None:
        for directory in self._directories or []:
            directory.close()
        self._directories = None
