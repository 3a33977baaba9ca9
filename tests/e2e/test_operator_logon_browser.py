"""A local operator (no LDAP directory) logs on to the console in Chromium with a login,
a password and a TOTP code computed here; the same code is refused a second time; an
operator session cannot enroll."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect

from mailpki.auth.totp import totp_code
from tests.e2e.conftest import bind_free_socket
from tests.e2e.test_enrollment_browser import make_home, ok, shot
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

PASSWORD = "Quiet-Lighthouse-31"


def add_operator(home: Path, folder: Path, login: str, role: str) -> bytes:
    """`mailpki operator add`; the TOTP secret read back from the printed otpauth URI."""
    pw = folder / f"{login}.pw"
    pw.write_text(PASSWORD + "\n")
    result = ok(
        mailpki("operator", "add", "--home", home, login, "--role", role, "--password-file", pw)
    )
    uri = next(line for line in result.out.splitlines() if line.startswith("otpauth://"))
    b32 = parse_qs(urlsplit(uri).query)["secret"][0]
    return base64.b32decode(b32 + "=" * (-len(b32) % 8))


def fresh_code(secret: bytes) -> str:
    """The current code, not in the last 2 s of its step (so the page gets it in time)."""
    if time.time() % 30 > 28:
        time.sleep(30 - time.time() % 30 + 0.1)
    return totp_code(secret, time.time())


def operator_logon(page: Page, url: str, login: str, code: str) -> None:
    page.goto(f"{url}/admin")
    form = page.locator("form.operator-logon")
    form.get_by_label("Login").fill(login)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_label("Code from the app").fill(code)
    form.get_by_role("button", name="Log on with the code").click()


@pytest.fixture
def console(tmp_path: Path, smtp_server: SMTPServer, serve_portal: Any) -> tuple[Path, str]:
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server)
    return home, serve_portal(home, sock).url


def test_local_officer_logs_on_with_a_totp_code_once(
    browser: Browser, console: tuple[Path, str], tmp_path: Path, screenshots: Path
) -> None:
    home, url = console
    secret = add_operator(home, tmp_path, "olga", "officer")
    code = fresh_code(secret)

    first = browser.new_context()
    page = first.new_page()
    operator_logon(page, url, "olga", code)
    expect(page).to_have_url(f"{url}/admin")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("button", name="Log out (olga)")).to_be_visible()
    shot(page, screenshots, "80-operator-console")
    # A new password ends the sessions of the old one, at their next request.
    new_pw = tmp_path / "new.pw"
    new_pw.write_text("Another-Quiet-Harbour-8\n")
    ok(mailpki("operator", "passwd", "--home", home, "olga", "--password-file", new_pw))
    page.goto(f"{url}/admin")
    expect(page.locator("form.operator-logon")).to_be_visible()
    new_pw.write_text(PASSWORD + "\n")
    ok(mailpki("operator", "passwd", "--home", home, "olga", "--password-file", new_pw))
    operator_logon(page, url, "olga", totp_code(secret, time.time() + 30))
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    # An operator account has no mailbox: the enrollment form refuses it.
    response = page.goto(f"{url}/form")
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("opens the console, not the enrollment pages")
    first.close()

    # The same code, from another browser: refused (a code is good once), one message.
    second = browser.new_context()
    page = second.new_page()
    operator_logon(page, url, "olga", code)
    expect(page.locator("#logon-error")).to_have_text("Wrong login, password or code.")
    page.goto(f"{url}/form")
    expect(page).to_have_url(f"{url}/")  # not logged on
    # A wrong password with a fresh code: the same message.
    page.goto(f"{url}/admin")
    form = page.locator("form.operator-logon")
    form.get_by_label("Login").fill("olga")
    form.get_by_label("Password").fill("Not-The-Password-1")
    form.get_by_label("Code from the app").fill(totp_code(secret, time.time() + 30))
    form.get_by_role("button", name="Log on with the code").click()
    expect(page.locator("#logon-error")).to_have_text("Wrong login, password or code.")
    shot(page, screenshots, "81-operator-logon-refused")
    second.close()

    events = ok(mailpki("audit", "verify", "--home", home))
    assert events.code == 0


def test_operator_and_auditor_accounts_get_a_console_session(
    browser: Browser, console: tuple[Path, str], tmp_path: Path
) -> None:
    home, url = console
    for login, role in (("oscar", "operator"), ("aude", "auditor")):
        secret = add_operator(home, tmp_path, login, role)
        context = browser.new_context()
        page = context.new_page()
        operator_logon(page, url, login, fresh_code(secret))
        expect(page).to_have_url(f"{url}/admin")
        expect(page.locator("form.operator-logon")).to_have_count(0)  # logged on
        expect(page.get_by_role("button", name=f"Log out ({login})")).to_be_visible()
        # Removed: the session ends at its next request.
        ok(mailpki("operator", "remove", "--home", home, login))
        page.goto(f"{url}/admin")
        expect(page.locator("form.operator-logon")).to_be_visible()
        context.close()
