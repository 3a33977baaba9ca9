"""A person as a directory describes them, and how directory attributes map to it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from mailpki.errors import ConfigError


@dataclass(frozen=True)
class DirectoryEntry:
    """One person's entry, mapped from whatever schema the directory uses.

    Everything here came from outside: policy checks it again before it goes into a
    certificate (Person.from_untrusted)."""

    directory: str  # the configured directory's name ("embedded" for the built-in one)
    dn: str
    login: str
    mail: str | None = None
    display_name: str | None = None
    given_name: str | None = None
    surname: str | None = None
    organisation: str | None = None
    site: str | None = None  # department / office / OU, as mapped
    enabled: bool = True
    groups: tuple[str, ...] = ()  # group DNs (memberOf) or names
    employee_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["groups"] = list(self.groups)
        return data


@dataclass(frozen=True)
class AttributeMapping:
    """Which LDAP attribute holds which part of an entry (one per flavour; overridable)."""

    object_class: str
    login: tuple[str, ...]  # tried in order for lookup; the first is the login shown
    mail: str = "mail"
    display_name: str = "displayName"
    given_name: str = "givenName"
    surname: str = "sn"
    organisation: str = "o"
    site: str = "ou"
    groups: str = "memberOf"
    employee_id: str = "employeeNumber"
    # Active Directory: userAccountControl, bit 0x2 = ACCOUNTDISABLE. Empty: no such flag.
    account_control: str = ""
    # OpenLDAP (ppolicy): an entry with this attribute present is locked / disabled.
    disabled_marker: str = ""
    # Kerberos logon: the attribute holding the whole principal (user@REALM), e.g.
    # krbPrincipalName. Empty: Active Directory matches userPrincipalName, then
    # sAMAccountName; OpenLDAP matches the principal's user part against the login.
    kerberos_principal: str = ""
    extra_search: tuple[str, ...] = field(default=("cn",))  # also matched by prefix search

    def attributes(self) -> list[str]:
        names = [
            *self.login,
            self.mail,
            self.display_name,
            self.given_name,
            self.surname,
            self.organisation,
            self.site,
            self.groups,
            self.employee_id,
            *self.extra_search,
        ]
        names += [a for a in (self.account_control, self.disabled_marker) if a]
        return sorted({n for n in names if n})

    def with_overrides(self, overrides: dict[str, Any]) -> AttributeMapping:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(
                f"unknown attribute mapping key(s): {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(known))})"
            )
        values: dict[str, Any] = {}
        for key, value in overrides.items():
            if key in ("login", "extra_search"):
                items = value if isinstance(value, list | tuple) else str(value).split(",")
                values[key] = tuple(str(v).strip() for v in items if str(v).strip())
            else:
                values[key] = str(value).strip()
        return replace(self, **values)


OPENLDAP = AttributeMapping(
    object_class="inetOrgPerson", login=("uid",), disabled_marker="pwdAccountLockedTime"
)
ACTIVE_DIRECTORY = AttributeMapping(
    object_class="user",
    login=("sAMAccountName", "userPrincipalName"),
    organisation="company",
    site="department",
    account_control="userAccountControl",
)
MAPPINGS: dict[str, AttributeMapping] = {"openldap": OPENLDAP, "ad": ACTIVE_DIRECTORY}
AD_ACCOUNT_DISABLE = 0x2
