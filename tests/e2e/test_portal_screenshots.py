"""The portal's screenshots in the user guide and the portal's tutorial, taken by a
person's walk through the portal in headless Chromium against a real slapd and a real SMTP
server: the invitation's logon page, the form pre-filled from the directory, the download page, the tutorial, the
certificate directory listing the new certificate, and the renewal offer that the expiry
notice leads to.

Normally the pictures go into a temporary folder and the test checks that each page
rendered; `scripts/screenshots` sets MAILPKI_SCREENSHOTS_DIR to the package's
static/screenshots folder so the committed pictures are replaced. The generated file
password is painted over.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import bind_free_socket
from tests.e2e.screenshot_names import HEIGHT, MAX_BYTES, OUTPUT_ENV, SCREENSHOTS, WIDTH
from tests.e2e.test_enrollment_browser import (
    LINK_RE,
    add_openldap,
    mails_to,
    make_home,
    ok,
)
from tests.e2e.test_renewal_browser import short_profile
from tests.fixtures.slapd import SlapdServer, clear_certificates
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Flat pages: 64 colours keep text crisp and each picture near 25 KB instead of 90 KB.
COLOURS = 64


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    data = path.read_bytes()[:24]
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def output_folder(tmp_path: Path) -> Path:
    named = os.environ.get(OUTPUT_ENV)
    folder = Path(named) if named else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def new_page(browser: Browser) -> Page:
    context = browser.new_context(
        viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1, accept_downloads=True
    )
    return context.new_page()


def take(page: Page, folder: Path, name: str, *, mask: list[Any] | None = None) -> None:
    """The viewport as a PNG of few colours (whatever `mask` covers is painted grey)."""
    assert name in SCREENSHOTS, f"{name} is not in screenshot_names.SCREENSHOTS"
    png = page.screenshot(
        full_page=False, animations="disabled", mask=mask or [], mask_color="#9aa0a6"
    )
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    few = picture.quantize(
        colors=COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    few.save(folder / name, format="PNG", optimize=True)


def log_on(page: Page, login: str, password: str) -> None:
    page.get_by_label("Login", exact=True).fill(login)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log on", exact=True).click()


def test_the_portal_screenshots_of_the_user_guide(
    browser: Browser,
    tmp_path: Path,
    openldap_server: SlapdServer,
    smtp_server: SMTPServer,
    serve_portal: Any,
) -> None:
    folder = output_folder(tmp_path)
    alice = openldap_server.users["alice"]
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server, ("keymanager.key_type", "p256"))
    add_openldap(home, openldap_server)
    short_profile(home)  # so the expiry notice comes right away, for the renewal page
    ok(mailpki("invite", "--home", home, "alice"))
    [invitation] = mails_to(smtp_server, "alice@example.com")
    [link] = LINK_RE.findall(invitation.text)
    live = serve_portal(home, sock)
    try:
        page = new_page(browser)
        page.goto(link)
        expect(page.locator("#invited")).to_contain_text("Alice Liddell (alice@example.com)")
        take(page, folder, "portal-logon.png")
        log_on(page, "alice", alice.password or "")

        expect(page.locator("#f-mail")).to_have_text("alice@example.com")
        expect(page.locator("#f-site")).to_have_text("Berlin")
        take(page, folder, "portal-form.png")
        page.get_by_label("I have read this and accept it").check()
        page.get_by_role("button", name="Accept and make my certificate").click()

        expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()
        secret = page.locator("#generated-password")
        expect(secret).to_be_visible()
        take(page, folder, "portal-download.png", mask=[secret])

        page.goto(f"{live.url}/tutorial")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        take(page, folder, "portal-tutorial.png")
        # The tutorial shows a committed screenshot too, served by the portal.
        shown = page.locator("img[src*='screenshots/portal-certdir.png']")
        expect(shown).to_have_count(1)
        served = page.request.get(f"{live.url}{shown.get_attribute('src')}")
        assert served.ok and served.body()[:8] == PNG_SIGNATURE

        page.goto(f"{live.url}/certs?mail=alice@example.com")
        expect(page.locator("li.cert")).to_have_count(1)
        take(page, folder, "portal-certdir.png")
        page.context.close()

        ok(mailpki("lifecycle", "run", "--home", home))
        [notice] = [
            m for m in mails_to(smtp_server, "alice@example.com") if "expires" in m["Subject"]
        ]
        [renew_link] = LINK_RE.findall(notice.text)
        page = new_page(browser)
        page.goto(renew_link)
        log_on(page, "alice", alice.password or "")
        expect(page.locator("#renewal")).to_be_visible()
        expect(page.get_by_role("button", name="Renew", exact=True)).to_be_visible()
        take(page, folder, "portal-renew.png")
        page.context.close()
    finally:
        clear_certificates(openldap_server)

    taken = sorted(p.name for p in folder.glob("*.png"))
    assert taken == sorted(SCREENSHOTS)
    for name in SCREENSHOTS:
        assert png_size(folder / name) == (WIDTH, HEIGHT), name
        assert (folder / name).stat().st_size <= MAX_BYTES, name
