"""Leavers against the real slapd servers (OpenLDAP with ppolicy, the Active Directory
imitation with userAccountControl), on SQLite and PostgreSQL, officers' notices through
aiosmtpd: a locked, a disabled (0x2) and a deleted entry lose their certificates
(affiliationChanged, unpublished); the escrow stays; a directory that is down or times
out revokes nothing."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from sqlalchemy import select

from mailpki.ca.serials import show_serial, to_hex
from mailpki.directory.registry import DirectorySettings
from mailpki.instance.instance import Instance
from mailpki.store.models import CertificateRecord, EscrowedKey
from tests.fixtures.slapd import LOCKED_FOREVER, SlapdServer
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

OFFICER = "officer@example.com"
AD_PERSON = ["top", "person", "organizationalPerson", "inetOrgPerson", "user"]


def ok(result):  # type: ignore[no-untyped-def]
    assert result.code == 0, (result.out, result.err)
    return result


def admin(server: SlapdServer) -> ldap3.Connection:
    return ldap3.Connection(
        ldap3.Server(server.host, port=server.port),
        server.admin_dn,
        server.admin_password,
        auto_bind=True,
    )


@pytest.fixture
def people(openldap_server: SlapdServer, ad_server: SlapdServer) -> Iterator[dict[str, str]]:
    """Entries this test may lock, disable and delete (the known users are shared)."""
    ol_people = openldap_server.users["alice"].dn.split(",", 1)[1]
    ad_users = ad_server.users["alice"].dn.split(",", 1)[1]
    made = {
        "leo": (openldap_server, f"uid=leo-lc,{ol_people}"),
        "lena": (openldap_server, f"uid=lena-lc,{ol_people}"),
        "max": (openldap_server, f"uid=max-lc,{ol_people}"),
        "adam": (ad_server, f"cn=Adam Leaver,{ad_users}"),
    }
    mails = {
        "leo": "leo-lc@example.com",
        "lena": "lena-lc@example.com",
        "max": "max-lc@example.com",
        "adam": "adam.leaver@corp.example.com",
    }
    for key, (server, dn) in made.items():
        conn = admin(server)
        try:
            conn.delete(dn)  # left over from an interrupted run
            if server is ad_server:
                attrs = {"objectClass": AD_PERSON, "cn": "Adam Leaver", "sn": "Leaver",
                         "sAMAccountName": "adam-lc", "mail": mails[key],
                         "userPrincipalName": "adam-lc@corp.example.com",
                         "userAccountControl": "512"}  # fmt: skip
            else:
                login = dn.split(",")[0].split("=")[1]
                attrs = {"objectClass": ["inetOrgPerson"], "uid": login, "cn": key,
                         "sn": key, "mail": mails[key]}  # fmt: skip
            assert conn.add(dn, attributes=attrs), conn.result
        finally:
            conn.unbind()
    yield mails
    for server, dn in made.values():
        conn = admin(server)
        try:
            conn.delete(dn)
        finally:
            conn.unbind()


def certificates(home: Path) -> dict[str, tuple[str, str | None]]:
    """serial -> (status, revocation reason)."""
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            return {
                serial: (status, reason)
                for serial, status, reason in session.execute(
                    select(
                        CertificateRecord.serial,
                        CertificateRecord.status,
                        CertificateRecord.revocation_reason,
                    ).where(CertificateRecord.email.is_not(None))
                )
            }
    finally:
        instance.close()


def test_leavers_locked_disabled_and_deleted_are_revoked_outages_revoke_nothing(
    home: Path,
    tmp_path: Path,
    openldap_server: SlapdServer,
    ad_server: SlapdServer,
    smtp_server: SMTPServer,
    people: dict[str, str],
    reset_certificates: None,
) -> None:
    for key, value in (
        ("keymanager.key_type", "p256"),
        ("keymanager.pool_size", "0"),
        ("smtp.host", smtp_server.host),
        ("smtp.port", str(smtp_server.port)),
        ("lifecycle.officers", OFFICER),
    ):
        ok(mailpki("config", "set", "--home", home, key, value))
    ok(
        mailpki(
            "directory",
            "add",
            "ol",
            "--home",
            home,
            "--url",
            openldap_server.ldaps_url,
            "--base-dn",
            openldap_server.base_dn,
            "--bind-dn",
            openldap_server.bind_dn,
            "--bind-password-file",
            openldap_server.bind_password_file,
            "--flavour",
            "openldap",
            "--domain",
            "example.com",
            "--ca-file",
            openldap_server.ca_file,
        )
    )
    ok(mailpki("directory", "add", "ad", "--home", home, "--url", ad_server.url, "--starttls",
               "--base-dn", ad_server.base_dn, "--bind-dn", ad_server.bind_dn,
               "--bind-password-file", ad_server.bind_password_file, "--flavour", "ad",
               "--domain", "corp.example.com", "--ca-file", ad_server.ca_file,
               "--netbios-domain", ad_server.netbios_domain))  # fmt: skip
    (tmp_path / "pw").write_text("leaver-test-password-1\n")
    serials: dict[str, str] = {}
    for key, mail in {
        "alice": openldap_server.users["alice"].mail,
        "carol": openldap_server.users["carol"].mail,  # locked with ppolicy
        "dora": ad_server.users["disabled"].mail,  # userAccountControl 514
        "bob": ad_server.users["bob"].mail,
        "sam": "sam@slow.example.com",  # a domain whose directory is added later (step 4)
        **people,
    }.items():
        assert mail is not None
        result = ok(mailpki("enroll", "--home", home, "--email", mail, "--name", f"{key} Test",
                            "--out", tmp_path / f"{key}.p12", "--password-file",
                            tmp_path / "pw"))  # fmt: skip
        serials[key] = to_hex(int(result.out.split("certificate ")[1].split(",")[0], 16))

    # 1. The locked (ppolicy) and the disabled (0x2) lose their certificates.
    result = ok(mailpki("lifecycle", "run", "--home", home))
    assert f"revoked {show_serial(serials['carol'])} (affiliationChanged)" in result.out
    assert f"revoked {show_serial(serials['dora'])} (affiliationChanged)" in result.out
    state = certificates(home)
    assert state[serials["carol"]] == ("revoked", "affiliation_changed")
    assert state[serials["dora"]] == ("revoked", "affiliation_changed")
    assert {state[serials[k]][0] for k in ("alice", "bob", "leo", "lena", "max", "adam")} == {
        "valid"
    }
    officer_mail = [m for m in smtp_server.messages if OFFICER in m.rcpt_tos]
    assert sorted(m["Subject"] for m in officer_mail if "Leaver" in m["Subject"]) == sorted(
        [
            f"Leaver: {ad_server.users['disabled'].mail} (certificates revoked)",
            f"Leaver: {openldap_server.users['carol'].mail} (certificates revoked)",
        ]
    )
    # The escrow stays: a leaver's mail can still be read after a recovery.
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            escrow = session.scalar(
                select(EscrowedKey.state).where(EscrowedKey.serial == serials["carol"])
            )
        assert escrow == "delivered"
    finally:
        instance.close()

    # 2. Lock one, disable one in AD, delete one: `directory sync` applies the same rule.
    ol, ad = admin(openldap_server), admin(ad_server)
    try:
        ol_people = openldap_server.users["alice"].dn.split(",", 1)[1]
        assert ol.modify(
            f"uid=lena-lc,{ol_people}",
            {"pwdAccountLockedTime": [(ldap3.MODIFY_ADD, [LOCKED_FOREVER])]},
        )
        assert ol.delete(f"uid=leo-lc,{ol_people}")
        ad_users = ad_server.users["alice"].dn.split(",", 1)[1]
        assert ad.modify(f"cn=Adam Leaver,{ad_users}",
                         {"userAccountControl": [(ldap3.MODIFY_REPLACE, ["514"])]})  # fmt: skip
    finally:
        ol.unbind()
        ad.unbind()
    result = ok(mailpki("directory", "sync", "--home", home))
    assert f"leaver: {people['leo']} (gone from the directory)" in result.out
    assert f"leaver: {people['lena']} (disabled in the directory)" in result.out
    assert f"leaver: {people['adam']} (disabled in the directory)" in result.out
    state = certificates(home)
    for key in ("leo", "lena", "adam"):
        assert state[serials[key]] == ("revoked", "affiliation_changed"), key
    # Unpublished: lena's entry no longer holds her certificate.
    conn = admin(openldap_server)
    try:
        conn.search(f"uid=lena-lc,{ol_people}", "(objectClass=*)",
                    attributes=["userCertificate;binary"])  # fmt: skip
        assert not conn.entries[0].entry_attributes_as_dict.get("userCertificate;binary")
    finally:
        conn.unbind()

    # 3. A directory that is down revokes nothing, even though max is "gone" meanwhile.
    conn = admin(openldap_server)
    try:
        assert conn.delete(f"uid=max-lc,{ol_people}")
    finally:
        conn.unbind()
    openldap_server.stop()
    try:
        result = mailpki("lifecycle", "run", "--home", home)
        assert result.code == 1
        assert "leaver check stopped: directory unavailable" in result.out
        assert certificates(home)[serials["max"]][0] == "valid"
    finally:
        openldap_server.start()

    # 4. A directory that accepts the connection but never answers (a timeout) neither.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        instance = Instance.open(home)
        try:
            instance.directories.add(
                DirectorySettings(
                    name="slow",
                    flavour="openldap",
                    url=f"ldaps://127.0.0.1:{silent.getsockname()[1]}",
                    base_dn="dc=slow",
                    bind_dn="cn=x,dc=slow",
                    bind_password_file=str(openldap_server.bind_password_file),
                    domains=("slow.example.com",),
                    timeout_seconds=1,
                )
            )
        finally:
            instance.close()
        result = mailpki("lifecycle", "run", "--home", home)
        assert result.code == 1 and "directory unavailable" in result.out, result.out
        assert certificates(home)[serials["max"]][0] == "valid"
    finally:
        silent.close()
    ok(mailpki("directory", "remove", "slow", "--home", home))

    # 5. With every directory answering again, max is taken for gone.
    result = ok(mailpki("lifecycle", "run", "--home", home))
    assert f"revoked {show_serial(serials['max'])} (affiliationChanged)" in result.out
    assert certificates(home)[serials["alice"]][0] == "valid"


@pytest.mark.parametrize("flavour", ["openldap", "ad"])
def test_find_many_by_mail_batches_and_escapes(
    flavour: str, openldap_server: SlapdServer, ad_server: SlapdServer
) -> None:
    """Over several batches; a filter metacharacter in an address is data, not a filter;
    a disabled account comes back disabled, an unknown address as None."""
    from mailpki.directory.ldap import MAIL_BATCH, LdapDirectory
    from mailpki.directory.registry import DirectorySettings, open_directory

    server = openldap_server if flavour == "openldap" else ad_server
    directory = open_directory(
        DirectorySettings(
            name="t",
            flavour=flavour,
            url=server.ldaps_url,
            base_dn=server.base_dn,
            bind_dn=server.bind_dn,
            bind_password_file=str(server.bind_password_file),
            domains=server.domains,
            ca_file=str(server.ca_file),
        )
    )
    assert isinstance(directory, LdapDirectory)
    try:
        domain = server.domains[0]
        bulk = [f"{server.bulk_login(n)}@{domain}" for n in range(MAIL_BATCH * 2 + 7)]
        disabled = server.users["carol" if flavour == "openldap" else "disabled"].mail
        assert disabled is not None
        tricky = [f"*@{domain}", f"x)(mail=*)@{domain}", f"nobody@{domain}"]
        if flavour == "ad":  # the AD imitation's bulk users have other addresses
            bulk = [u.mail for u in server.users.values() if u.mail]
        found = directory.find_many_by_mail([*bulk, disabled.upper(), *tricky])
        assert all(found[m.lower()] is not None for m in bulk), [m for m in bulk if not found[m]]
        assert found[disabled.lower()] is not None
        assert found[disabled.lower()].enabled is False  # type: ignore[union-attr]
        assert [found[m.lower()] for m in tricky] == [None, None, None]
    finally:
        directory.close()
