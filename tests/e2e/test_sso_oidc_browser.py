"""OpenID Connect logon in headless Chromium against a real OpenID provider
(node-oidc-provider, started by the test): the whole authorization-code flow with PKCE,
and the refusals a browser can provoke (a mail outside the allowed domains, a forged
or replayed callback, a redirect URI changed on the way)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from mailpki.instance.instance import Instance
from mailpki.store.models import AuditRecord
from tests.e2e.conftest import bind_free_socket
from tests.fixtures.oidc import OidcProviderServer
from tests.integration.cli_helpers import Result, mailpki

pytestmark = pytest.mark.integration


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    return result


def audit(home: Path, event: str) -> list[dict[str, Any]]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            rows = session.scalars(select(AuditRecord.data).where(AuditRecord.event == event))
            return [json.loads(row) for row in rows]
    finally:
        instance.close()


class Portal:
    def __init__(self, url: str, home: Path, provider: OidcProviderServer) -> None:
        self.url, self.home, self.provider = url, home, provider


@pytest.fixture
def portal(tmp_path: Path, serve_portal: Any, oidc_provider: Any) -> Portal:
    sock = bind_free_socket()
    url = f"http://localhost:{sock.getsockname()[1]}"
    provider = oidc_provider(f"{url}/oidc/callback")
    home = tmp_path / "corp"
    ok(mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    ))  # fmt: skip
    for key, value in [
        ("web.base_url", url),
        ("web.pki_base_url", "http://pki.example.com"),
        ("keymanager.pool_size", "0"),
    ]:
        ok(mailpki("config", "set", "--home", home, key, value))
    added = ok(mailpki(
        "auth", "oidc", "add", "cloud", "--home", home, "--issuer", provider.issuer,
        "--client-id", provider.client_id, "--client-secret-file", provider.secret_file,
        "--claim-groups", "groups",
    ))  # fmt: skip
    assert f"{url}/oidc/callback" in added.out
    serve_portal(home, sock)
    return Portal(url, home, provider)


def log_on_at_provider(page: Page, login: str) -> None:
    """The provider's own pages: its log-on form, then its consent page."""
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any-password")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if "/interaction/" in page.url:  # consent
        page.click("button[type=submit]")


def test_the_whole_flow_logs_on_and_enrolls(portal: Portal, page: Page, screenshots: Path) -> None:
    page.goto(f"{portal.url}/")
    page.screenshot(path=screenshots / "sso-oidc-logon.png", full_page=True)
    page.click("text=Log on with cloud")
    expect(page).to_have_url(re.compile(re.escape(portal.provider.issuer) + "/interaction/"))
    log_on_at_provider(page, "alice")
    expect(page).to_have_url(f"{portal.url}/form")
    expect(page.locator("body")).to_contain_text("alice@example.com")
    expect(page.locator("body")).to_contain_text("Alice Cloud")
    page.screenshot(path=screenshots / "sso-oidc-form.png", full_page=True)
    page.check("input[name=accept]")
    page.click("text=Accept and make my certificate")
    expect(page.locator("ul.downloads a").first).to_be_visible(timeout=60_000)
    succeeded = audit(portal.home, "logon.succeeded")
    assert succeeded[-1]["method"] == "oidc" and succeeded[-1]["provider"] == "cloud"
    assert succeeded[-1]["login"] == "alice@example.com"


def test_the_authorization_request_uses_pkce_state_and_nonce(portal: Portal, page: Page) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{portal.url}/oidc/cloud")
    auth = next(u for u in requests if u.startswith(f"{portal.provider.issuer}/auth"))
    query = parse_qs(urlsplit(auth).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 43 and len(query["nonce"][0]) >= 43
    assert query["redirect_uri"] == [f"{portal.url}/oidc/callback"]
    assert query["response_type"] == ["code"] and "openid" in query["scope"][0]


def test_a_mail_outside_the_allowed_domains_is_refused(portal: Portal, page: Page) -> None:
    page.goto(f"{portal.url}/oidc/cloud")
    log_on_at_provider(page, "eve@elsewhere.org")
    expect(page.locator("#logon-error")).to_contain_text(
        "the mail domain elsewhere.org is not one this PKI serves"
    )
    refused = audit(portal.home, "logon.refused")
    assert refused[-1]["method"] == "oidc" and refused[-1]["login"] == "eve@elsewhere.org"
    assert "elsewhere.org is not one this PKI serves" in refused[-1]["reason"]


def test_an_unverified_mail_is_refused(portal: Portal, page: Page) -> None:
    page.goto(f"{portal.url}/oidc/cloud")
    log_on_at_provider(page, "unverified")
    expect(page.locator("#logon-error")).to_contain_text("has not verified the mail address")


def test_forged_and_replayed_callbacks_are_refused(portal: Portal, page: Page) -> None:
    callbacks: list[str] = []
    page.on(
        "request",
        lambda r: (
            callbacks.append(r.url) if r.url.startswith(f"{portal.url}/oidc/callback") else None
        ),
    )
    page.goto(f"{portal.url}/oidc/cloud")
    log_on_at_provider(page, "bob")
    expect(page).to_have_url(f"{portal.url}/form")
    page.click("text=Log out")
    # The same callback again (state, code): the logon it belonged to is used up.
    page.goto(callbacks[-1])
    expect(page.locator("#logon-error")).to_contain_text("was used already or has expired")
    # A made-up state, and a real one with its code swapped.
    page.goto(f"{portal.url}/oidc/callback?state=forged-state&code=forged-code")
    expect(page.locator("#logon-error")).to_contain_text("not valid")
    refused = audit(portal.home, "logon.refused")
    assert len(refused) >= 2


def test_a_callback_from_another_browser_is_refused(
    portal: Portal, page: Page, browser: Any
) -> None:
    """Login CSRF: a logon started in one browser (here: its authorization URL, taken
    without following it) and finished in another."""
    started = page.context.request.get(f"{portal.url}/oidc/cloud", max_redirects=0)
    assert started.status == 303
    authorization_url = started.headers["location"]
    assert authorization_url.startswith(f"{portal.provider.issuer}/auth")
    other = browser.new_context().new_page()
    other.goto(authorization_url)
    log_on_at_provider(other, "carol")
    expect(other.locator("#logon-error")).to_contain_text("not valid")
    assert other.url.startswith(f"{portal.url}/oidc/callback")


def test_a_changed_redirect_uri_is_refused_by_the_provider(portal: Portal, page: Page) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{portal.url}/oidc/cloud")
    auth = next(u for u in requests if u.startswith(f"{portal.provider.issuer}/auth"))
    parts = urlsplit(auth)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["redirect_uri"] = "http://attacker.example/steal"
    response = page.goto(urlunsplit(parts._replace(query=urlencode(query))))
    assert response is not None and response.status == 400
    assert "redirect_uri" in page.content()
