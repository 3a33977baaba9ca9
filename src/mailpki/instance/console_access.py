"""Who may use the operator console, and with which roles.

A logged-on console user is the session's identity (a dict). Their roles come from one
place, `console_roles`:

1. an identity with the key ``operator_roles`` (a list of role names, set by a logon
   that knows its own roles, such as a local operator account) has exactly those roles
   (unknown names are ignored);
2. otherwise a directory logon (password, Kerberos or OpenID Connect; never an HR PIN)
   gets a role for each configured group the person is in: ``portal.officer_groups`` ->
   officer, ``portal.operator_groups`` -> operator, ``portal.auditor_groups`` -> auditor.

Anyone else (an ordinary person logged on to the portal) has no role and is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mailpki.errors import AuthenticationError, InputError
from mailpki.instance.config import Config
from mailpki.policy.approval import in_any_group
from mailpki.policy.operator_roles import OperatorRole, Permission, allows, parse_operator_role

__all__ = ["ConsoleUser", "console_roles", "console_user", "require"]

# Logons that prove a directory account (a PIN from HR proves no group membership).
DIRECTORY_METHODS = ("directory", "kerberos", "oidc")
ROLE_GROUP_SETTINGS: dict[OperatorRole, str] = {
    "officer": "portal.officer_groups",
    "operator": "portal.operator_groups",
    "auditor": "portal.auditor_groups",
}


def _names(value: object) -> tuple[str, ...]:
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _parsed(names: Iterable[object]) -> frozenset[OperatorRole]:
    roles: set[OperatorRole] = set()
    for name in names:
        try:
            roles.add(parse_operator_role(str(name)))
        except InputError:
            continue
    return frozenset(roles)


def console_roles(identity: Mapping[str, Any] | None, config: Config) -> frozenset[OperatorRole]:
    """The console roles of a session identity (empty: not a console user)."""
    if not identity:
        return frozenset()
    given = identity.get("operator_roles")
    if given is not None:
        return _parsed(given) if isinstance(given, list | tuple) else frozenset()
    entry = identity.get("entry")
    if identity.get("method") not in DIRECTORY_METHODS or not isinstance(entry, Mapping):
        return frozenset()
    groups = tuple(str(g) for g in entry.get("groups") or ())
    return frozenset(
        role
        for role, setting in ROLE_GROUP_SETTINGS.items()
        if (wanted := _names(config.get(setting))) and in_any_group(groups, wanted)
    )


def _login_of(identity: Mapping[str, Any]) -> str:
    entry = identity.get("entry")
    if isinstance(entry, Mapping) and entry.get("login"):
        return str(entry["login"])
    return str(identity.get("login") or "")


@dataclass(frozen=True)
class ConsoleUser:
    """A console user as the pages and the use cases see them."""

    login: str
    name: str
    mail: str
    roles: frozenset[OperatorRole]

    @property
    def actor(self) -> str:
        """How the audit log names them."""
        return f"console:{self.login}"

    def may(self, permission: Permission) -> bool:
        return any(allows(role, permission) for role in self.roles)


def console_user(identity: Mapping[str, Any] | None, config: Config) -> ConsoleUser | None:
    """The console user of a session identity, or None when it has no console role."""
    roles = console_roles(identity, config)
    if identity is None or not roles:
        return None
    login = _login_of(identity)
    if not login:
        return None
    entry = identity.get("entry")
    entry = entry if isinstance(entry, Mapping) else {}
    name = str(entry.get("display_name") or identity.get("display_name") or login)
    mail = str(entry.get("mail") or identity.get("mail") or "")
    return ConsoleUser(login=login, name=name, mail=mail, roles=roles)


def require(user: ConsoleUser | None, permission: Permission) -> ConsoleUser:
    """`user` if they may do `permission`; AuthenticationError otherwise."""
    if user is None or not user.may(permission):
        raise AuthenticationError(f"your console role does not allow this ({permission})")
    return user
