"""Kerberos single sign-on against a real MIT KDC and a real slapd.

`curl --negotiate` logs on to a real `mailpki serve` with a ticket from `kinit`; the
principal is mapped to the OpenLDAP entry of its realm and enrollment is approved
automatically as after a password logon. Tokens for the refusal tests are made by the
GSSAPI library from real tickets (then forged, replayed, expired, for another service)
and sent to the app in process; each refusal must show the logon form with the reason,
be audited as `logon.refused` and count against the lockout.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from mailpki.instance.instance import Instance
from mailpki.store.models import AuditRecord
from mailpki.web.server import create_app
from tests.fixtures.kdc import OTHER_SERVICE, PARTNER_REALM, REALM, SERVICE, Kdc
from tests.fixtures.slapd import SlapdServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
_addresses = itertools.count(1)


def ok(result: Any) -> Any:
    assert result.code == 0, f"{result.out}\n{result.err}"
    return result


def audit_events(home: Path) -> list[tuple[str, dict[str, Any]]]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            rows = session.execute(
                select(AuditRecord.event, AuditRecord.data).order_by(AuditRecord.seq)
            ).all()
    finally:
        instance.close()
    return [(event, json.loads(data)) for event, data in rows]


def configure(home: Path, kdc: Kdc, server: SlapdServer, *, realm: str = REALM) -> None:
    """The OpenLDAP directory mapped to `realm`, and the portal's keytab and service."""
    ok(mailpki(
        "directory", "add", "people", "--home", home, "--url", server.ldaps_url,
        "--base-dn", server.base_dn, "--bind-dn", server.bind_dn,
        "--bind-password-file", server.bind_password_file, "--flavour", "openldap",
        "--domain", "example.com", "--ca-file", server.ca_file, "--kerberos-realm", realm,
    ))  # fmt: skip
    ok(mailpki("config", "set", "auth.kerberos.keytab", kdc.service_keytab, "--home", home))
    ok(mailpki("config", "set", "auth.kerberos.service", SERVICE, "--home", home))


@pytest.fixture
def kerberos_env(kdc: Kdc, monkeypatch: pytest.MonkeyPatch) -> Kdc:
    for key, value in kdc.env().items():
        monkeypatch.setenv(key, value)
    return kdc


@pytest.fixture
def sso_home(sqlite_home: Path, kerberos_env: Kdc, openldap_server: SlapdServer) -> Path:
    configure(sqlite_home, kerberos_env, openldap_server)
    return sqlite_home


def token_for(kdc: Kdc, principal: str, ccache: Path, service: str = SERVICE) -> str:
    """A base64 SPNEGO token of `principal` for `service`, from a real ticket."""
    import gssapi

    kdc.kinit(principal, ccache)
    creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
    target = gssapi.Name(f"{service}@{REALM}", gssapi.NameType.kerberos_principal)
    spnego = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
    context = gssapi.SecurityContext(name=target, creds=creds, usage="initiate", mech=spnego)
    return base64.b64encode(context.step()).decode()


@pytest.fixture
def client(sso_home: Path) -> Iterator[TestClient]:
    n = next(_addresses)
    with TestClient(
        create_app(sso_home), client=(f"10.9.{n}.1", 40000), follow_redirects=False
    ) as test_client:
        yield test_client


def negotiate(client: TestClient, token: str, path: str = "/") -> Any:
    return client.get(path, headers={"Authorization": f"Negotiate {token}"})


def refusals(home: Path) -> list[dict[str, Any]]:
    return [data for event, data in audit_events(home) if event == "logon.refused"]


# -- curl against mailpki serve -----------------------------------------------------------


def curl(kdc: Kdc, ccache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--negotiate", "-u", ":", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **kdc.env(ccache)},
    )  # fmt: skip


def test_curl_negotiate_logs_on_and_enrolls_with_auto_approval(
    sso_home: Path, kerberos_env: Kdc, serve: Any, tmp_path: Path
) -> None:
    url = serve().replace("127.0.0.1", "localhost")  # the service is HTTP/localhost
    ccache = kerberos_env.kinit("alice", tmp_path / "alice.cc")
    jar = tmp_path / "jar"
    first = curl(kerberos_env, ccache, "-c", str(jar), "-b", str(jar), "-v", "-L", f"{url}/")
    assert first.returncode == 0, first.stderr
    # curl sends its ticket at once (a browser waits for the 401 challenge, see the
    # next test); the logon answers with the mutual-authentication token.
    assert re.search(r"> Authorization: Negotiate [A-Za-z0-9+/=]{100,}", first.stderr)
    assert "< HTTP/1.1 303" in first.stderr
    assert re.search(r"< www-authenticate: Negotiate [A-Za-z0-9+/=]{20,}", first.stderr, re.I)
    assert "alice@example.com" in first.stdout  # the pre-filled form
    csrf = CSRF_RE.search(first.stdout)
    assert csrf is not None
    enrolled = curl(
        kerberos_env, ccache, "-c", str(jar), "-b", str(jar), f"{url}/form",
        "--data-urlencode", f"csrf={csrf.group(1)}", "-d", "mode=single",
        "-d", "password_choice=generate", "-d", "accept=on",
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    assert '<ul class="downloads">' in enrolled.stdout  # approved automatically and issued
    events = audit_events(sso_home)
    succeeded = [d for e, d in events if e == "logon.succeeded"]
    assert succeeded[-1]["method"] == "kerberos"
    assert succeeded[-1]["login"] == "alice@EXAMPLE.COM"
    assert succeeded[-1]["dn"] == "uid=alice,ou=people,dc=example,dc=com"
    assert "cert.issued" in [e for e, _ in events]


def test_without_a_ticket_the_challenge_carries_the_logon_form(
    sso_home: Path, kerberos_env: Kdc, serve: Any, tmp_path: Path
) -> None:
    url = serve().replace("127.0.0.1", "localhost")
    empty = tmp_path / "no-ticket.cc"  # no credential cache: curl has nothing to send
    page = curl(kerberos_env, empty, "-i", f"{url}/")
    assert page.returncode == 0, page.stderr
    assert page.stdout.startswith("HTTP/1.1 401")
    assert re.search(r"^www-authenticate: Negotiate\r?$", page.stdout, re.I | re.M)
    assert 'name="secret"' in page.stdout and 'action="/logon"' in page.stdout
    console = curl(kerberos_env, empty, "-i", f"{url}/admin")
    assert console.stdout.startswith("HTTP/1.1 401") and 'action="/logon"' in console.stdout


# -- refusals, in process -----------------------------------------------------------------


def test_valid_token_logs_on_in_process(
    client: TestClient, kerberos_env: Kdc, tmp_path: Path, sso_home: Path
) -> None:
    response = negotiate(client, token_for(kerberos_env, "bob", tmp_path / "bob.cc"))
    assert response.status_code == 303 and response.headers["location"] == "/form"
    assert response.headers["www-authenticate"].startswith("Negotiate ")
    form = client.get("/form")
    assert form.status_code == 200 and "bob@example.com" in form.text


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("forged", "forged"),
        ("other service", "for another service"),
        ("replayed", "replayed"),
        ("not base64", "not base64"),
        ("ntlm", "NTLM is not accepted"),
        ("garbage", "not a valid Kerberos ticket"),
    ],
)
def test_bad_tickets_are_refused_audited_and_counted(
    client: TestClient, kerberos_env: Kdc, tmp_path: Path, sso_home: Path, case: str, reason: str
) -> None:
    ccache = tmp_path / "alice.cc"
    if case == "forged":
        raw = bytearray(base64.b64decode(token_for(kerberos_env, "alice", ccache)))
        raw[len(raw) // 2] ^= 0x55  # a bit flipped inside the encrypted ticket
        token = base64.b64encode(bytes(raw)).decode()
    elif case == "other service":
        token = token_for(kerberos_env, "alice", ccache, OTHER_SERVICE)
    elif case == "replayed":
        token = token_for(kerberos_env, "alice", ccache)
        assert negotiate(client, token).status_code == 303
        client.cookies.clear()
    elif case == "not base64":
        token = "%%%not-base64%%%"
    elif case == "ntlm":
        token = base64.b64encode(b"NTLMSSP\x00\x01\x00\x00\x00" + bytes(24)).decode()
    else:
        token = base64.b64encode(b"\x60\x10" + os.urandom(16)).decode()
    response = negotiate(client, token)
    assert response.status_code == 403
    assert "Your network logon (Kerberos) was refused" in response.text
    assert reason in response.text
    assert 'action="/logon"' in response.text  # the form, to log on with a password
    assert "www-authenticate" not in response.headers  # no new challenge: no loop
    refused = refusals(sso_home)[-1]
    assert refused["method"] == "kerberos" and reason in refused["reason"]
    assert "session" not in str(client.cookies)


def test_expired_ticket_is_refused(
    client: TestClient, kerberos_env: Kdc, tmp_path: Path, sso_home: Path
) -> None:
    import gssapi

    ccache = tmp_path / "short.cc"
    kerberos_env.kinit("dave", ccache, lifetime="2s")
    creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
    target = gssapi.Name(f"{SERVICE}@{REALM}", gssapi.NameType.kerberos_principal)
    token = gssapi.SecurityContext(name=target, creds=creds, usage="initiate").step()
    time.sleep(6)  # the ticket ends 2 s after kinit; 3 s of clock skew are allowed
    response = negotiate(client, base64.b64encode(token).decode())
    assert response.status_code == 403
    assert "expired" in response.text or "clocks" in response.text
    assert refusals(sso_home)[-1]["method"] == "kerberos"


@pytest.mark.parametrize(
    ("principal", "reason"),
    [
        ("carol", "the account is disabled"),
        ("nobody-here", "nobody-here@EXAMPLE.COM has no directory entry"),
        ("alice/admin", "is not a person"),
    ],
)
def test_principals_without_a_usable_entry_are_refused(
    client: TestClient,
    kerberos_env: Kdc,
    tmp_path: Path,
    sso_home: Path,
    principal: str,
    reason: str,
) -> None:
    token = token_for(kerberos_env, principal, tmp_path / "p.cc")
    response = negotiate(client, token)
    assert response.status_code == 403 and reason in response.text
    refused = refusals(sso_home)[-1]
    assert reason in refused["reason"]
    if principal != "alice/admin":
        assert refused["login"] == f"{principal}@{REALM}"


def test_a_realm_mapped_to_no_directory_is_refused(
    sqlite_home: Path, kerberos_env: Kdc, openldap_server: SlapdServer, tmp_path: Path
) -> None:
    configure(sqlite_home, kerberos_env, openldap_server, realm="PARTNER.EXAMPLE.ORG")
    with TestClient(create_app(sqlite_home), client=("10.8.0.1", 1)) as test_client:
        response = negotiate(test_client, token_for(kerberos_env, "alice", tmp_path / "a.cc"))
    assert response.status_code == 403
    assert "the Kerberos realm EXAMPLE.COM is not mapped to a directory" in response.text
    assert refusals(sqlite_home)[-1]["login"] == "alice@EXAMPLE.COM"


def test_refusals_count_in_the_lockout(
    client: TestClient, kerberos_env: Kdc, tmp_path: Path, sso_home: Path
) -> None:
    garbage = base64.b64encode(b"\x60\x10" + bytes(16)).decode()
    for _ in range(5):  # auth.max_failures
        assert negotiate(client, garbage).status_code == 403
    # Locked: even a good ticket from this address is refused now.
    locked = negotiate(client, token_for(kerberos_env, "bob", tmp_path / "bob.cc"))
    assert locked.status_code == 403 and "too many failed logons" in locked.text
    # Another address is not locked.
    with TestClient(create_app(sso_home), client=("10.6.0.1", 1), follow_redirects=False) as c:
        assert negotiate(c, token_for(kerberos_env, "bob", tmp_path / "b2.cc")).status_code == 303
    assert sum("too many failed logons" in d["reason"] for d in refusals(sso_home)) == 1


def test_officer_console_accepts_kerberos(
    client: TestClient, kerberos_env: Kdc, tmp_path: Path, sso_home: Path
) -> None:
    ok(mailpki("config", "set", "portal.officer_groups", "pki-admins", "--home", sso_home))
    with TestClient(create_app(sso_home), client=("10.7.0.1", 1), follow_redirects=False) as c:
        first = c.get("/admin")
        assert first.status_code == 401 and first.headers["www-authenticate"] == "Negotiate"
        token = token_for(kerberos_env, "alice", tmp_path / "alice.cc")
        response = negotiate(c, token, "/admin")
        assert response.status_code == 303 and response.headers["location"] == "/admin"
        console = c.get("/admin")
        assert console.status_code == 200, console.text


def test_directory_add_refuses_a_bad_realm(sqlite_home: Path, openldap_server: SlapdServer) -> None:
    result = mailpki(
        "directory", "add", "people", "--home", sqlite_home, "--url", openldap_server.ldaps_url,
        "--base-dn", openldap_server.base_dn, "--bind-dn", openldap_server.bind_dn,
        "--bind-password-file", openldap_server.bind_password_file, "--flavour", "openldap",
        "--domain", "example.com", "--ca-file", openldap_server.ca_file,
        "--kerberos-realm", "example.com",
    )  # fmt: skip
    assert result.code == 2 and "is not a Kerberos realm" in result.err
    listed = json.loads(ok(mailpki("directory", "list", "--json", "--home", sqlite_home)).out)
    assert listed == []


@pytest.mark.parametrize("value", ["pki.example.com", "HTTP/", "HTTP/pki example", "a/b@lower"])
def test_config_refuses_a_bad_service_principal(sqlite_home: Path, value: str) -> None:
    result = mailpki("config", "set", "auth.kerberos.service", value, "--home", sqlite_home)
    assert result.code != 0 and "is not a service principal" in result.err
    config = (sqlite_home / "config.toml").read_text()
    assert "kerberos" not in config


def test_a_missing_keytab_is_a_clear_503_not_a_crash(
    sqlite_home: Path, kerberos_env: Kdc, openldap_server: SlapdServer, tmp_path: Path
) -> None:
    configure(sqlite_home, kerberos_env, openldap_server)
    ok(mailpki("config", "set", "auth.kerberos.keytab", tmp_path / "gone.keytab",
               "--home", sqlite_home))  # fmt: skip
    with TestClient(create_app(sqlite_home), client=("10.5.0.1", 1)) as test_client:
        response = negotiate(test_client, token_for(kerberos_env, "bob", tmp_path / "b.cc"))
    assert response.status_code == 503
    assert "Kerberos) is not available just now" in response.text
    assert 'action="/logon"' in response.text


def test_several_realms_each_map_to_their_directory(
    sqlite_home: Path,
    kerberos_env: Kdc,
    openldap_server: SlapdServer,
    ad_server: SlapdServer,
    tmp_path: Path,
) -> None:
    """EXAMPLE.COM people live in OpenLDAP, CORP.EXAMPLE.COM people (across the realm
    trust) in Active Directory: the same first name, two people."""
    configure(sqlite_home, kerberos_env, openldap_server)
    ok(mailpki(
        "directory", "add", "corp-ad", "--home", sqlite_home, "--url", ad_server.url,
        "--starttls", "--base-dn", ad_server.base_dn, "--bind-dn", ad_server.bind_dn,
        "--bind-password-file", ad_server.bind_password_file, "--flavour", "ad",
        *[arg for d in ad_server.domains for arg in ("--domain", d)],
        "--ca-file", ad_server.ca_file, "--netbios-domain", ad_server.netbios_domain,
        "--kerberos-realm", PARTNER_REALM,
    ))  # fmt: skip
    with TestClient(create_app(sqlite_home), client=("10.4.0.1", 1)) as c:
        corp = negotiate(c, token_for(kerberos_env, f"alice@{PARTNER_REALM}", tmp_path / "c.cc"))
        assert corp.status_code == 200 and "alice.liddell@corp.example.com" in corp.text
    with TestClient(create_app(sqlite_home), client=("10.4.0.2", 1)) as c:
        home_realm = negotiate(c, token_for(kerberos_env, "alice", tmp_path / "a.cc"))
        assert home_realm.status_code == 200 and "alice@example.com" in home_realm.text
    with TestClient(create_app(sqlite_home), client=("10.4.0.3", 1)) as c:
        dora = negotiate(c, token_for(kerberos_env, f"dora@{PARTNER_REALM}", tmp_path / "d.cc"))
        assert dora.status_code == 403 and "the account is disabled" in dora.text
    logons = [d for e, d in audit_events(sqlite_home) if e == "logon.succeeded"]
    assert [d["login"] for d in logons] == [f"alice@{PARTNER_REALM}", f"alice@{REALM}"]
    assert "cn=users,dc=corp,dc=example,dc=com" in logons[0]["dn"].lower()
