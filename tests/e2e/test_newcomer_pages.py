"""What a newcomer saw go wrong on the portal's pages, checked in Chromium at 1280 pixels
and at phone width (390): the certificate directory never scrolls sideways; the officer
console has its own frame; 404 and 405 wear the portal's frame; the invitation page names
the person; the result page shows no serial, calls the department a department, and the
Download button goes once it was used; messages start with a capital letter."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import bind_free_socket
from tests.e2e.test_enrollment_browser import (
    LINK_RE,
    add_person,
    import_pin,
    mails_to,
    make_home,
    ok,
    pin_logon,
    shot,
)
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

WIDTHS = [pytest.param(1280, id="desktop"), pytest.param(390, id="phone")]


def fits(page: Page) -> bool:
    """Nothing scrolls sideways: the page is no wider than the window."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def inside_window(page: Page, selector: str) -> None:
    """Every element matching `selector` lies within the window's width."""
    width = page.evaluate("window.innerWidth")
    boxes = page.locator(selector).evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.left, r.right]; })"
    )
    assert boxes, selector
    for left, right in boxes:
        assert left >= 0 and right <= width + 0.5, (selector, left, right, width)


def styled(page: Page) -> None:
    """The portal's frame: its stylesheet applied (the card has a border and a background)."""
    expect(page.locator("header.top .brand")).to_be_visible()
    background = page.locator("section.card").evaluate("e => getComputedStyle(e).backgroundColor")
    assert background == "rgb(255, 255, 255)"
    assert page.locator("link[rel=stylesheet][href*='portal.css']").count() == 1


@pytest.fixture
def portal(tmp_path: Path, smtp_server: SMTPServer, serve_portal: Any) -> tuple[Path, str]:
    sock = bind_free_socket()
    home = make_home(
        tmp_path, sock.getsockname()[1], smtp_server, ("portal.officer_groups", "officers")
    )
    add_person(
        home, tmp_path, "nina,nina.newcomer@example.com,Nina Newcomer,Nina,Newcomer,Sales,true"
    )
    import_pin(home, tmp_path, "E-7001", "nina.newcomer@example.com", "Nina Newcomer", "70017001")
    live = serve_portal(home, sock)
    return home, live.url


def enroll_nina(page: Page, home: Path, url: str, *, dual: bool = False) -> None:
    page.goto(url)
    pin_logon(page, "E-7001", "70017001")
    if dual:
        page.get_by_label(re.compile("Two keys")).check()
    page.get_by_label("I have read this and accept it").check()
    page.get_by_role("button", name="Accept and make my certificate").click()
    expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_certificate_directory_fits_the_window(
    page: Page, portal: tuple[Path, str], tmp_path: Path, screenshots: Path, width: int
) -> None:
    home, url = portal
    password = tmp_path / "pw"
    password.write_text("a long passphrase 2026\n")
    for n in range(2):  # two certificates: two entries
        ok(mailpki("enroll", "--home", home, "--email", "nina.newcomer@example.com",
                   "--name", "Nina Newcomer", "--out", tmp_path / f"n{n}.p12",
                   "--password-file", password))  # fmt: skip
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{url}/certs?mail=nina.newcomer@example.com")
    expect(page.locator("li.cert")).to_have_count(2)
    shot(page, screenshots, f"71-certdir-{width}")
    assert fits(page)
    inside_window(page, "code.fingerprint")
    inside_window(page, "a.download")
    # The serial is one line, not a column seven lines tall.
    serial = page.locator("li.cert code").nth(1)
    assert re.fullmatch(r"[0-9A-F]{32}", serial.inner_text())
    line = float(serial.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 20"))
    assert serial.bounding_box()["height"] <= 2 * line  # type: ignore[index]
    with page.expect_download() as info:
        page.locator("a.download", has_text="PEM").first.click()
    assert info.value.suggested_filename.endswith(".pem")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_officer_console_has_its_own_frame(
    page: Page, portal: tuple[Path, str], screenshots: Path, width: int
) -> None:
    _, url = portal
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{url}/admin")
    expect(page.locator("header.top .brand")).to_contain_text("Operator console")
    expect(page.get_by_role("heading", level=1)).to_have_text("Operator console")
    expect(page.locator(".progress")).to_have_count(0)  # no employee step bar
    expect(page.get_by_text("Get your secure mail certificate")).to_have_count(0)
    expect(page.get_by_label("PIN", exact=True)).to_have_count(0)
    assert page.locator("body.officer").count() == 1
    assert fits(page)
    shot(page, screenshots, f"72-officer-logon-{width}")
    logon = page.get_by_role("form", name="Console logon")
    logon.get_by_label("Login", exact=True).fill("nobody")
    logon.get_by_label("Password", exact=True).fill("wrong password")
    page.get_by_role("button", name="Log on to the console").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong login or password")
    expect(page.locator("header.top .brand")).to_contain_text("Operator console")


@pytest.mark.parametrize("width", WIDTHS)
def test_404_and_405_wear_the_portal_frame(
    page: Page, portal: tuple[Path, str], screenshots: Path, width: int
) -> None:
    _, url = portal
    page.set_viewport_size({"width": width, "height": 900})
    response = page.goto(f"{url}/no-such-page")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    styled(page)
    assert fits(page)
    shot(page, screenshots, f"73-404-{width}")
    # A 405: a form posted where only GET is allowed (the tutorial).
    page.set_content(f'<form method="post" action="{url}/tutorial"><button>go</button></form>')
    page.get_by_role("button", name="go").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("This page cannot be used that way")
    styled(page)
    assert fits(page)
    shot(page, screenshots, f"74-405-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_invitation_page_names_the_person(
    page: Page, portal: tuple[Path, str], smtp_server: SMTPServer, screenshots: Path, width: int
) -> None:
    home, _url = portal
    ok(mailpki("invite", "--home", home, "nina"))
    [mail] = mails_to(smtp_server, "nina.newcomer@example.com")
    assert "The page first asks who you are." in " ".join(mail.text.split())
    [link] = LINK_RE.findall(mail.text)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(link)
    expect(page.locator("#invited")).to_contain_text(
        "This link is for Nina Newcomer (nina.newcomer@example.com)"
    )
    expect(page.locator("#invited")).to_contain_text("employee id and the PIN from HR")
    assert fits(page)
    shot(page, screenshots, f"75-invitation-names-{width}")
    # A wrong PIN: the message is a sentence.
    pin_logon(page, "E-7001", "00000000")
    expect(page.get_by_role("alert")).to_have_text("Wrong employee id or PIN.")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_result_page_after_the_one_time_download(
    page: Page, portal: tuple[Path, str], tmp_path: Path, screenshots: Path, width: int
) -> None:
    _home, url = portal
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(url)
    pin_logon(page, "E-7001", "70017001")
    expect(page.locator("dt", has_text="Department")).to_have_count(1)
    expect(page.locator("dt", has_text="Site")).to_have_count(0)
    expect(page.locator("#f-site")).to_have_text("Sales")
    page.get_by_label(re.compile("Two keys")).check()
    page.get_by_label("I have read this and accept it").check()
    page.get_by_role("button", name="Accept and make my certificate").click()
    expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()
    expect(page.locator("main")).to_contain_text("one for signing, one for encryption")
    # No serial for the employee (and so no single serial for two certificates).
    assert not re.search(r"serial", page.locator("main").inner_text(), re.I)
    assert fits(page)
    shot(page, screenshots, f"76-result-{width}")
    password = page.locator("#generated-password").inner_text().strip()
    buttons = page.get_by_role("link", name=re.compile("^Download "))
    expect(buttons).to_have_count(2)
    files = []
    with page.expect_download() as info:
        buttons.first.click()
    files.append(tmp_path / info.value.suggested_filename)
    info.value.save_as(files[-1])
    expect(page.get_by_role("link", name=re.compile("^Download "))).to_have_count(1)
    expect(page.get_by_text(re.compile(r"✓ .*\.p12 (is downloading|downloaded)"))).to_have_count(1)
    page.goto(f"{url}/done")
    expect(page.get_by_role("link", name=re.compile("^Download "))).to_have_count(1)
    expect(page.get_by_text(re.compile(r"✓ .*\.p12 downloaded"))).to_have_count(1)
    shot(page, screenshots, f"77-result-after-download-{width}")
    with page.expect_download() as info:
        page.get_by_role("link", name=re.compile("^Download ")).click()
    files.append(tmp_path / info.value.suggested_filename)
    info.value.save_as(files[-1])
    expect(page.get_by_role("link", name=re.compile("^Download "))).to_have_count(0)
    # The tutorial names the real files and how each client trusts the root.
    page.get_by_role("link", name=re.compile("set it up")).click()
    expect(page.locator("#p12-name")).to_have_text(
        "nina.newcomer@example.com-encryption.p12 and nina.newcomer@example.com-signing.p12"
    )
    expect(page.locator("#thunderbird-trust")).to_be_visible()
    expect(page.locator("#thunderbird")).to_contain_text(
        "Find Example Corp S/MIME Root CA (under Example Corp), select it → Edit Trust…"
    )
    expect(page.locator("#thunderbird")).to_contain_text("This certificate can identify mail users")
    expect(page.locator("#apple-trust")).to_contain_text("Always Trust")
    expect(page.locator("#outlook-trust")).to_contain_text("certmgr.msc")
    assert "NAME.p12" not in page.content()
    assert fits(page)
    shot(page, screenshots, f"78-tutorial-trust-{width}")
    # NSS (Thunderbird's engine) lists each file under its own friendly name.
    names = {path.name: nss_friendly_names(path, password, tmp_path) for path in files}
    assert names == {
        "nina.newcomer@example.com-signing.p12": {"Nina Newcomer (signing)"},
        "nina.newcomer@example.com-encryption.p12": {"Nina Newcomer (encryption)"},
    }


def nss_friendly_names(path: Path, password: str, folder: Path) -> set[str]:
    """The friendly names NSS's `pk12util -l` reads from a PKCS#12 file."""
    if shutil.which("pk12util") is None:
        pytest.skip("pk12util not installed (apt-get install libnss3-tools)")
    secret = folder / "p12.pw"
    secret.write_text(password)
    listed = subprocess.run(
        ["pk12util", "-l", str(path), "-w", str(secret)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return set(re.findall(r"Friendly Name: (.+)", listed))
