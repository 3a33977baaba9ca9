"""Kerberos single sign-on in headless Chromium, against a real MIT KDC and slapd.

Chromium is started with `--auth-server-allowlist=localhost` and the realm's
KRB5_CONFIG / KRB5CCNAME in its environment, as a company desktop would be configured
by policy. With a ticket from `kinit` the portal opens on the pre-filled form with no
password typed; without one, the 401 challenge's body (the logon form) is shown and a
password logon still works.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Playwright, expect

from tests.e2e.conftest import CHROMIUM, _require_chromium, bind_free_socket
from tests.fixtures.kdc import SERVICE, Kdc
from tests.fixtures.slapd import SlapdServer
from tests.integration.cli_helpers import Result, mailpki

pytestmark = pytest.mark.integration


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    return result


@pytest.fixture
def sso_portal(
    tmp_path: Path,
    kdc: Kdc,
    openldap_server: SlapdServer,
    serve_portal: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    for key, value in kdc.env().items():
        monkeypatch.setenv(key, value)
    sock = bind_free_socket()
    port = sock.getsockname()[1]
    home = tmp_path / "corp"
    ok(mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    ))  # fmt: skip
    for key, value in [
        ("web.base_url", f"http://localhost:{port}"),
        ("web.pki_base_url", "http://pki.example.com"),
        ("keymanager.pool_size", "0"),
        ("auth.kerberos.keytab", str(kdc.service_keytab)),
        ("auth.kerberos.service", SERVICE),
    ]:
        ok(mailpki("config", "set", "--home", home, key, value))
    ok(mailpki(
        "directory", "add", "corp", "--home", home, "--url", openldap_server.ldaps_url,
        "--base-dn", openldap_server.base_dn, "--bind-dn", openldap_server.bind_dn,
        "--bind-password-file", openldap_server.bind_password_file, "--flavour", "openldap",
        "--domain", "example.com", "--ca-file", openldap_server.ca_file,
        "--kerberos-realm", kdc.realm,
    ))  # fmt: skip
    serve_portal(home, sock)
    return f"http://localhost:{port}"


@pytest.fixture
def chromium_for(playwright: Playwright, kdc: Kdc) -> Iterator[Any]:
    """chromium_for(ccache) -> Browser with that credential cache, Negotiate allowed for
    localhost (never delegation)."""
    _require_chromium()
    browsers: list[Browser] = []

    def launch(ccache: Path) -> Browser:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--disable-gpu",
                "--disable-quic",
                "--auth-server-allowlist=localhost",
                # Headless Chromium leaves Negotiate out of its default schemes.
                "--auth-schemes=basic,digest,ntlm,negotiate",
                "--disable-auth-negotiate-cname-lookup",
            ],
            env={**os.environ, **kdc.env(ccache)},
        )
        browsers.append(browser)
        return browser

    yield launch
    for browser in browsers:
        browser.close()


def test_a_desktop_with_a_ticket_is_logged_on_without_a_password(
    sso_portal: str, chromium_for: Any, kdc: Kdc, tmp_path: Path, screenshots: Path
) -> None:
    ccache = kdc.kinit("alice", tmp_path / "alice.cc")
    page = chromium_for(ccache).new_page()
    # A freshly started Chromium answers the very first Negotiate challenge of its life
    # as unsupported (its --auth-schemes take effect after that); a desktop browser
    # has long been running when the person opens the portal. So: one challenge first.
    page.goto(f"{sso_portal}/admin")
    page.goto(f"{sso_portal}/")
    expect(page).to_have_url(f"{sso_portal}/form")
    expect(page.locator("body")).to_contain_text("alice@example.com")
    page.screenshot(path=screenshots / "sso-kerberos-form.png", full_page=True)
    page.check("input[name=accept]")
    page.click("text=Accept and make my certificate")
    # Approved automatically, as after a password logon: issued and ready to download.
    expect(page.locator("ul.downloads a").first).to_be_visible(timeout=60_000)


def test_a_browser_without_a_ticket_falls_back_to_the_form(
    sso_portal: str, chromium_for: Any, tmp_path: Path, screenshots: Path
) -> None:
    page = chromium_for(tmp_path / "none.cc").new_page()
    response = page.goto(f"{sso_portal}/")
    assert response is not None and response.status == 401
    assert response.headers["www-authenticate"] == "Negotiate"
    page.screenshot(path=screenshots / "sso-kerberos-fallback.png", full_page=True)
    page.fill("#login", "bob")
    page.fill("#secret", "bob-Can-We-Fix-It")
    page.click("form:has(#login) button[type=submit]")
    expect(page).to_have_url(f"{sso_portal}/form")
    expect(page.locator("body")).to_contain_text("bob@example.com")
