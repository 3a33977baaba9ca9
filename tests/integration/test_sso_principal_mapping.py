"""Kerberos principals mapped to directory entries, against the real slapd imitations of
OpenLDAP and Active Directory (the KDC side is in test_sso_kerberos.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailpki.directory.entry import MAPPINGS
from mailpki.directory.ldap import LdapDirectory
from tests.fixtures.slapd import SlapdServer

pytestmark = pytest.mark.integration


def directory(server: SlapdServer, **overrides: str) -> LdapDirectory:
    return LdapDirectory(
        name=f"sso-{server.flavour}",
        url=server.url,
        base_dn=server.base_dn,
        bind_dn=server.bind_dn,
        bind_password=server.bind_password,
        flavour=server.flavour,  # type: ignore[arg-type]
        domains=server.domains,
        netbios_domain=server.netbios_domain,
        timeout=3.0,
        mapping=MAPPINGS[server.flavour].with_overrides(dict(overrides)),
    )


@pytest.fixture
def ad(ad_server: SlapdServer) -> Iterator[LdapDirectory]:
    with directory(ad_server) as found:
        yield found


def test_ad_principal_is_the_user_principal_name(ad: LdapDirectory) -> None:
    entry = ad.find_by_principal("alice", "CORP.EXAMPLE.COM")  # UPN alice@corp.example.com
    assert entry is not None and entry.login == "alice" and entry.enabled
    assert entry.dn.lower().endswith("cn=users,dc=corp,dc=example,dc=com")
    disabled = ad.find_by_principal("dora", "CORP.EXAMPLE.COM")
    assert disabled is not None and not disabled.enabled  # userAccountControl 514


def test_ad_falls_back_to_the_sam_account_name(ad: LdapDirectory) -> None:
    # A realm whose name is not the UPN suffix: sAMAccountName in that domain.
    entry = ad.find_by_principal("jsmith", "CORP")
    assert entry is not None and entry.login == "jsmith"


def test_openldap_matches_the_login_or_a_configured_attribute(
    openldap_server: SlapdServer,
) -> None:
    with directory(openldap_server) as plain:
        entry = plain.find_by_principal("alice", "EXAMPLE.COM")
        assert entry is not None and entry.dn == "uid=alice,ou=people,dc=example,dc=com"
        locked = plain.find_by_principal("carol", "EXAMPLE.COM")
        assert locked is not None and not locked.enabled  # pwdAccountLockedTime
    # A site that keeps the whole principal in an attribute of its own (here: mail,
    # which the fixture has; krbPrincipalName in a real MIT-on-LDAP directory).
    with directory(openldap_server, kerberos_principal="mail") as mapped:
        entry = mapped.find_by_principal("bob", "EXAMPLE.COM")
        assert entry is not None and entry.login == "bob"
        assert mapped.find_by_principal("bob", "OTHER.ORG") is None


@pytest.mark.parametrize(
    "user", ["*", "alice)(uid=*", "a\\2a", "alice/admin", "x@y", "\x00", "", "a" * 300]
)
def test_hostile_principals_find_nobody(openldap_server: SlapdServer, user: str) -> None:
    with directory(openldap_server) as plain:
        assert plain.find_by_principal(user, "EXAMPLE.COM") is None
