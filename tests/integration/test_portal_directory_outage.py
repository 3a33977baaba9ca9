"""The portal while a real slapd is down: logons answer 503 with a page that says to try
again (and Retry-After), not an internal error, and work again once slapd is back."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from starlette.testclient import TestClient

from mailpki.web.server import create_app
from tests.fixtures.slapd import SlapdServer
from tests.integration.cli_helpers import mailpki

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
EMPLOYEE, PIN = "E-OUTAGE-1", "40404040"


def _ok(result: object) -> None:
    assert getattr(result, "code", 1) == 0, result


def _logon(client: TestClient, method: str, login: str, secret: str) -> httpx.Response:
    page = client.get("/")
    found = CSRF_RE.search(page.text)
    assert found, page.text
    return client.post(
        "/logon",
        data={"csrf": found.group(1), "method": method, "login": login, "secret": secret},
        follow_redirects=False,
    )


def test_logons_while_slapd_is_down_say_try_again(
    sqlite_home: Path, openldap_server: SlapdServer, tmp_path: Path
) -> None:
    server = openldap_server
    _ok(mailpki(
        "directory", "add", "people", "--home", sqlite_home, "--url", server.ldaps_url,
        "--base-dn", server.base_dn, "--bind-dn", server.bind_dn,
        "--bind-password-file", server.bind_password_file, "--flavour", "openldap",
        "--domain", "example.com", "--ca-file", server.ca_file, "--timeout", "2",
    ))  # fmt: skip
    person = server.bulk_login(4242)
    pins = tmp_path / "pins.csv"
    pins.write_text(f"employee_id,mail,name,pin\n{EMPLOYEE},{person}@example.com,Outage,{PIN}\n")
    _ok(mailpki("pins", "import", pins, "--home", sqlite_home))
    alice = server.users["alice"]

    with TestClient(create_app(sqlite_home), client=("10.8.0.1", 40000)) as client:
        server.stop()
        try:
            for method, login, secret in (
                ("pin", EMPLOYEE, PIN),
                ("directory", alice.login, alice.password),
            ):
                down = _logon(client, method, login, secret)
                assert down.status_code == 503, (method, down.status_code, down.text[:500])
                assert down.headers["retry-after"] == "30"
                assert "directory is not answering" in down.text
                assert "Traceback" not in down.text and "ldap" not in down.text.lower()
        finally:
            server.start()
        back = _logon(client, "pin", EMPLOYEE, PIN)
        assert back.status_code == 303, back.text[:500]
        assert client.get("/form").status_code == 200
