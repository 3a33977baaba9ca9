"""OpenID Connect logons through the portal's own routes (`/oidc/NAME`, `/oidc/callback`),
in process, against a real OpenID provider (node-oidc-provider) and a real slapd.

The provider's log-on pages are played over HTTP; the callback it sends the browser back
to is then opened in the portal. ID tokens are the provider's own, taken from the token
endpoint's answer and tampered with on their way into the portal (a changed claim under
the old signature, a token issued to another client, an earlier logon's token, a token
two hours old by the portal's clock); the callback itself is tampered with (state,
`iss`, a code of another client, a replayed or moved callback). Each refusal must show
the logon page with the reason, be audited as `logon.refused` with the reason and count
against the logon lockout (`auth.max_failures`). With an LDAP directory the mail claim
must name a usable directory entry. The operator console's logon page offers the
providers too.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc.util import urlsafe_b64decode, urlsafe_b64encode
from sqlalchemy import select
from starlette.testclient import TestClient

from mailpki.auth.oidc import OidcClient, OidcProvider
from mailpki.instance import sso as sso_use_cases
from mailpki.instance.instance import Instance
from mailpki.store.models import AuditRecord
from mailpki.web.server import create_app
from tests.fixtures.oidc import OidcProviderServer, follow_provider_pages
from tests.fixtures.slapd import SlapdServer
from tests.integration.cli_helpers import Result, mailpki

pytestmark = pytest.mark.integration

BASE = "http://localhost:9"  # web.base_url: the provider sends the browser back here
CALLBACK = f"{BASE}/oidc/callback"
REFUSED = "Your logon with your organisation&#39;s account was refused"
LOCKED = "too many failed logons"
_addresses = itertools.count(1)


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    return result


def audit_events(home: Path, event: str) -> list[dict[str, Any]]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            rows = session.scalars(
                select(AuditRecord.data).where(AuditRecord.event == event).order_by(AuditRecord.seq)
            )
            return [json.loads(row) for row in rows]
    finally:
        instance.close()


class Browser:
    """One browser at one client address: the portal in process, the provider over HTTP."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.authorization_url = ""

    def to_provider(self, path: str = "/oidc/cloud") -> str:
        """Start a logon at the portal: the provider's authorization URL it sends us to."""
        response = self.client.get(path)
        assert response.status_code == 303, response.text[:500]
        self.authorization_url = response.headers["location"]
        return self.authorization_url

    @property
    def nonce(self) -> str:
        return parse_qs(urlsplit(self.authorization_url).query)["nonce"][0]

    def at_provider(self, login: str, path: str = "/oidc/cloud") -> str:
        """The callback URL the provider sends the browser back with, after `login`."""
        back = follow_provider_pages(self.to_provider(path), login)
        assert back.startswith(CALLBACK + "?"), back
        return back

    def open(self, url: str) -> httpx.Response:
        """Open a callback URL (http://localhost:9/...) in the portal."""
        parts = urlsplit(url)
        return self.client.get(f"{parts.path}?{parts.query}")

    def log_on(self, login: str, path: str = "/oidc/cloud") -> httpx.Response:
        return self.open(self.at_provider(login, path))


@pytest.fixture
def provider(oidc_provider: Any) -> OidcProviderServer:
    server: OidcProviderServer = oidc_provider(CALLBACK)
    return server


@pytest.fixture
def home(sqlite_home: Path, provider: OidcProviderServer) -> Path:
    ok(mailpki("config", "set", "--home", sqlite_home, "web.base_url", BASE))
    ok(mailpki(
        "auth", "oidc", "add", "cloud", "--home", sqlite_home, "--issuer", provider.issuer,
        "--client-id", provider.client_id, "--client-secret-file", provider.secret_file,
        "--claim-groups", "groups",
    ))  # fmt: skip
    return sqlite_home


@pytest.fixture
def browser_at(home: Path) -> Iterator[Callable[..., Browser]]:
    """A browser at a new client address (each with its own portal app)."""
    with ExitStack() as stack:

        def new() -> Browser:
            address = f"10.16.{next(_addresses)}.1"
            client = TestClient(create_app(home), client=(address, 40000), follow_redirects=False)
            return Browser(stack.enter_context(client))

        yield new


class TokenEndpoint:
    """The token endpoint's answers as the portal receives them: recorded and, while
    `change` is set, tampered with on the way."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tokens: list[str] = []
        self.change: Callable[[str], str] | None = None
        real = OidcClient.exchange

        def exchange(
            client: OidcClient, *, code: str, redirect_uri: str, code_verifier: str
        ) -> str:
            token = real(client, code=code, redirect_uri=redirect_uri, code_verifier=code_verifier)
            self.tokens.append(token)
            return self.change(token) if self.change else token

        monkeypatch.setattr(OidcClient, "exchange", exchange)


@pytest.fixture
def token_endpoint(monkeypatch: pytest.MonkeyPatch) -> TokenEndpoint:
    return TokenEndpoint(monkeypatch)


def with_claim(token: str, **changes: Any) -> str:
    """The token with its claims changed and its signature kept (no longer matching)."""
    head, body, signature = token.split(".")
    claims = json.loads(urlsafe_b64decode(body.encode()))
    claims.update(changes)
    return f"{head}.{urlsafe_b64encode(json.dumps(claims).encode()).decode()}.{signature}"


class OtherClient:
    """The provider's other client (another application): its logons are genuine, and
    its codes and ID tokens are the provider's, issued to someone else."""

    def __init__(self, provider: OidcProviderServer) -> None:
        settings = OidcProvider(
            "other", provider.issuer, provider.other_client_id, str(provider.other_secret_file)
        )
        self.client = OidcClient(settings)
        self.verifier = secrets.token_urlsafe(48)

    def back(self, login: str, nonce: str) -> str:
        """The callback URL of a logon as `login` made with `nonce` (its code unused)."""
        url = self.client.authorization_url(
            redirect_uri=CALLBACK, state=secrets.token_urlsafe(24), nonce=nonce,
            code_verifier=self.verifier,
        )  # fmt: skip
        return follow_provider_pages(url, login)

    def id_token(self, login: str, nonce: str) -> str:
        code = parse_qs(urlsplit(self.back(login, nonce)).query)["code"][0]
        try:
            return self.client.exchange(
                code=code, redirect_uri=CALLBACK, code_verifier=self.verifier
            )
        finally:
            self.client.close()


def replace_query(url: str, **params: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in params.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return parts._replace(query=urlencode(query)).geturl()


def assert_refused(response: httpx.Response, reason: str) -> None:
    """The logon page again, with the refusal and its reason, and no session."""
    assert response.status_code == 403, (response.status_code, response.text[:300])
    assert "location" not in response.headers
    assert REFUSED in response.text and 'id="logon-error"' in response.text
    assert reason in html.unescape(response.text)
    assert 'href="/oidc/cloud"' in response.text  # the way to try again


# -- the ID token and the callback tampered with, through /oidc/callback -------------------


def bad_signature(browser: Browser, tokens: TokenEndpoint, **_: Any) -> httpx.Response:
    back = browser.at_provider("alice")
    tokens.change = lambda token: with_claim(token, email="mallory@example.com")
    return browser.open(back)


def wrong_audience(
    browser: Browser, tokens: TokenEndpoint, provider: OidcProviderServer, **_: Any
) -> httpx.Response:
    back = browser.at_provider("alice")
    foreign = OtherClient(provider).id_token("alice", browser.nonce)  # even this logon's nonce
    assert foreign.count(".") == 2
    tokens.change = lambda token: foreign
    return browser.open(back)


def expired(browser: Browser, monkeypatch: pytest.MonkeyPatch, **_: Any) -> httpx.Response:
    def two_hours_on(settings: OidcProvider) -> OidcClient:
        return OidcClient(settings, clock=lambda: time.time() + 7200)

    # The portal makes its provider client when the logon starts: the clock moves first.
    monkeypatch.setattr(sso_use_cases, "OidcClient", two_hours_on)
    return browser.log_on("alice")


def reused_token(
    browser: Browser, tokens: TokenEndpoint, browser_at: Callable[..., Browser], **_: Any
) -> httpx.Response:
    assert browser_at().log_on("bob").status_code == 303  # bob's good logon elsewhere
    earlier = tokens.tokens[-1]
    back = browser.at_provider("bob")
    tokens.change = lambda token: earlier  # that logon's token, with its nonce
    return browser.open(back)


def forged_state(browser: Browser, **_: Any) -> httpx.Response:
    return browser.open(
        replace_query(browser.at_provider("alice"), state=secrets.token_urlsafe(32))
    )


def other_browser(browser: Browser, **_: Any) -> httpx.Response:
    back = browser.at_provider("alice")
    browser.client.cookies.clear()  # the callback finished in another browser (login CSRF)
    return browser.open(back)


def replayed_callback(browser: Browser, **_: Any) -> httpx.Response:
    back = browser.at_provider("alice")
    assert browser.open(back).status_code == 303
    return browser.open(back)


def other_issuer(browser: Browser, provider: OidcProviderServer, **_: Any) -> httpx.Response:
    back = browser.at_provider("alice")
    assert parse_qs(urlsplit(back).query)["iss"] == [provider.issuer]  # RFC 9207
    return browser.open(replace_query(back, iss="https://idp.attacker.example"))


def code_of_another_client(
    browser: Browser, provider: OidcProviderServer, **_: Any
) -> httpx.Response:
    back = browser.at_provider("alice")
    other = OtherClient(provider)
    code = parse_qs(urlsplit(other.back("alice", browser.nonce)).query)["code"][0]
    other.client.close()
    return browser.open(replace_query(back, code=code))


def provider_error(browser: Browser, **_: Any) -> httpx.Response:
    back = browser.at_provider("alice")
    return browser.open(replace_query(back, code=None, error="access_denied"))


CASES: dict[str, tuple[Callable[..., httpx.Response], str, bool]] = {
    # case: (how, reason, does the refusal name the provider)
    "bad signature": (bad_signature, "not the provider's (bad signature)", True),
    "wrong audience": (wrong_audience, "issued to another client (wrong audience)", True),
    "expired": (expired, "the ID token has expired", True),
    "reused token": (reused_token, "nonce is not this logon's (replayed or mixed up)", True),
    "forged state": (forged_state, "not valid, was used already or has expired", False),
    "other browser": (other_browser, "not valid, was used already or has expired", False),
    "replayed callback": (replayed_callback, "was used already or has expired", False),
    "other issuer": (other_issuer, "the answer comes from another provider (iss)", True),
    "code of another client": (code_of_another_client, "refused the authorization code", True),
    "provider error": (provider_error, "did not log you on (access_denied)", True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_logons_are_refused_audited_and_counted(
    case: str,
    home: Path,
    provider: OidcProviderServer,
    browser_at: Callable[..., Browser],
    token_endpoint: TokenEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ok(mailpki("config", "set", "--home", home, "auth.max_failures", "1"))
    how, reason, names_provider = CASES[case]
    browser = browser_at()
    with monkeypatch.context() as patches:
        response = how(
            browser=browser, tokens=token_endpoint, provider=provider, browser_at=browser_at,
            monkeypatch=patches,
        )  # fmt: skip
        assert_refused(response, reason)
    refused = audit_events(home, "logon.refused")[-1]
    assert refused["method"] == "oidc" and reason in refused["reason"]
    # The provider is named once the callback's state matched a logon of this browser.
    assert refused.get("provider") == ("cloud" if names_provider else None)
    assert refused["login"] == ""  # refused before any mail claim was believed
    if case != "replayed callback":  # (that browser did log on, with the first callback)
        assert browser.client.get("/form").status_code == 303  # no session came of it
    # Counted: with auth.max_failures = 1 this address is locked now, even for a good token.
    token_endpoint.change = None
    browser.client.cookies.clear()
    locked = browser.log_on("dave")
    assert_refused(locked, LOCKED)
    assert LOCKED in audit_events(home, "logon.refused")[-1]["reason"]
    assert browser_at().log_on("dave").status_code == 303  # another address is not locked


# -- the lockout --------------------------------------------------------------------------


def test_refused_callbacks_lock_the_address_out(
    home: Path, browser_at: Callable[..., Browser], token_endpoint: TokenEndpoint
) -> None:
    """auth.max_failures (5) refusals from one address, then even a good logon from it
    is refused as too many failed logons (for auth.lockout_minutes)."""
    browser = browser_at()
    token_endpoint.change = lambda token: with_claim(token, email="mallory@example.com")
    for _ in range(5):
        assert_refused(browser.log_on("alice"), "bad signature")
    token_endpoint.change = None
    before = len(token_endpoint.tokens)
    locked = browser.log_on("alice")
    assert_refused(locked, LOCKED)
    assert "try again after" in locked.text
    assert len(token_endpoint.tokens) == before  # refused before the code was even redeemed
    reasons = [d["reason"] for d in audit_events(home, "logon.refused")]
    assert len(reasons) == 6 and sum(LOCKED in r for r in reasons) == 1
    assert all(d["method"] == "oidc" for d in audit_events(home, "logon.refused"))
    assert browser.client.get("/form").status_code == 303  # no session came of it
    assert browser_at().log_on("alice").status_code == 303  # another address logs on


def test_next_cannot_send_the_browser_elsewhere(browser_at: Callable[..., Browser]) -> None:
    """Only /admin is kept as the page to go on to: no open redirect after the logon."""
    browser = browser_at()
    response = browser.log_on("alice", "/oidc/cloud?next=https://attacker.example/")
    assert response.status_code == 303 and response.headers["location"] == "/form"


# -- the mail claim mapped to an entry of a real LDAP directory ---------------------------


@pytest.fixture
def ldap_home(home: Path, openldap_server: SlapdServer) -> Path:
    server = openldap_server
    ok(mailpki(
        "directory", "add", "people", "--home", home, "--url", server.ldaps_url,
        "--base-dn", server.base_dn, "--bind-dn", server.bind_dn,
        "--bind-password-file", server.bind_password_file, "--flavour", "openldap",
        "--domain", "example.com", "--ca-file", server.ca_file,
    ))  # fmt: skip
    return home


def test_the_mail_claim_logs_on_as_the_directory_entry(
    ldap_home: Path, openldap_server: SlapdServer, browser_at: Callable[..., Browser]
) -> None:
    browser = browser_at()
    response = browser.log_on("alice")
    assert response.status_code == 303 and response.headers["location"] == "/form"
    succeeded = audit_events(ldap_home, "logon.succeeded")[-1]
    assert succeeded["method"] == "oidc" and succeeded["provider"] == "cloud"
    assert succeeded["login"] == "alice@example.com"
    assert succeeded["dn"] == openldap_server.users["alice"].dn
    form = browser.client.get("/form")
    assert form.status_code == 200
    # The directory's name for her, not the one the provider's claims give.
    assert "Alice Liddell" in form.text and "Alice Cloud" not in form.text


@pytest.mark.parametrize(
    ("login", "reason"),
    [
        ("nobody", "nobody@example.com has no directory entry"),
        ("carol", "the account is disabled"),  # locked in slapd (pwdAccountLockedTime)
    ],
)
def test_a_mail_without_a_usable_entry_is_refused(
    ldap_home: Path, browser_at: Callable[..., Browser], login: str, reason: str
) -> None:
    browser = browser_at()
    assert_refused(browser.log_on(login), reason)
    refused = audit_events(ldap_home, "logon.refused")[-1]
    assert refused["method"] == "oidc" and refused["provider"] == "cloud"
    assert refused["login"] == f"{login}@example.com" and reason in refused["reason"]
    assert audit_events(ldap_home, "logon.succeeded") == []


def test_refusals_of_one_mail_lock_it_for_passwords_too(
    ldap_home: Path, browser_at: Callable[..., Browser]
) -> None:
    """The lockout counts refusals per mail too, across addresses, and it is the one the
    password form uses: after auth.max_failures (5), the mail is locked for both."""
    for _ in range(5):
        assert_refused(browser_at().log_on("carol"), "the account is disabled")
    assert_refused(browser_at().log_on("carol"), LOCKED)
    browser = browser_at()
    logon_page = browser.client.get("/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', logon_page.text)
    assert csrf is not None
    password = browser.client.post(
        "/logon",
        data={
            "csrf": csrf.group(1), "method": "directory", "login": "carol@example.com",
            "secret": "carol-Locked-3",
        },
    )  # fmt: skip
    assert password.status_code == 401
    assert "Too many failed logons: try again after" in password.text  # not "wrong password"
    assert browser_at().log_on("bob").status_code == 303  # other people are not locked


# -- the operator console's logon page ----------------------------------------------------


def test_the_console_logon_page_offers_the_providers(
    home: Path, browser_at: Callable[..., Browser]
) -> None:
    ok(mailpki("config", "set", "--home", home, "portal.officer_groups", "pki-admins"))
    browser = browser_at()
    page = browser.client.get("/admin")
    assert page.status_code == 200 and "Operator console" in page.text
    assert 'href="/oidc/cloud?next=/admin"' in page.text and "Log on with cloud" in page.text
    # The provider's groups claim makes "admin" an officer: back to the console.
    response = browser.log_on("admin", "/oidc/cloud?next=/admin")
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    console = browser.client.get("/admin")
    assert console.status_code == 200 and "Dashboard" in console.text
    # The portal's own logon page offers it for enrollment, without the detour.
    browser.client.cookies.clear()
    portal_page = browser.client.get("/")
    assert 'href="/oidc/cloud"' in portal_page.text and "next=/admin" not in portal_page.text
