"""External trust in headless Chromium: the /trust page an outside correspondent opens,
and the iPhone profile a person takes instead of the .p12 after enrolling.

Every file the browser downloads is checked by independent readers: Python's plistlib
for the Apple profiles, the openssl command for the certificates and the PKCS#12 inside.
"""

from __future__ import annotations

import plistlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from playwright.sync_api import Page, expect

from mailpki.web.portal.sessions import PAGE_CSP
from tests.e2e.conftest import bind_free_socket
from tests.e2e.test_enrollment_browser import (
    add_person,
    import_pin,
    make_home,
    pin_logon,
    shot,
)
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration


def openssl(*args: str | Path, stdin: bytes | None = None) -> str:
    result = subprocess.run(
        ["openssl", *map(str, args)], input=stdin, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode(errors="replace")


def root_of(home: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((home / "ca" / "root.pem").read_bytes())


def save(page: Page, link_name: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.get_by_role("link", name=link_name, exact=True).click()
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target


def test_trust_page_gives_the_root_in_every_form(
    page: Page, tmp_path: Path, smtp_server: SMTPServer, serve_portal: Any, screenshots: Path
) -> None:
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server)
    live = serve_portal(home, sock)
    root = root_of(home)
    sha256 = root.fingerprint(hashes.SHA256()).hex(":").upper()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    response = page.goto(f"{live.url}/")
    assert response is not None
    page.get_by_role("link", name="Trust our root").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Trust Example Corp")
    response = page.goto(f"{live.url}/trust")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert "script-src" not in PAGE_CSP or "'none'" in PAGE_CSP
    assert page.locator("script").count() == 0
    expect(page.locator("#sha256")).to_have_text(sha256)
    for platform in ("Outlook (Windows)", "Outlook (macOS)", "Apple Mail (macOS)",
                     "Thunderbird", "iPhone and iPad (iOS, iPadOS)", "Android"):  # fmt: skip
        expect(page.get_by_role("heading", name=platform, exact=True)).to_be_visible()
    shot(page, screenshots, "71-trust-page")

    folder = tmp_path / "downloads"
    folder.mkdir()
    cer = save(page, "root.cer", folder)
    pem = save(page, "root.pem", folder)
    p7c = save(page, "root.p7c", folder)
    profile = save(page, "root.mobileconfig", folder)

    # DER and PEM: the root itself, and openssl computes the fingerprint the page shows.
    shown = openssl("x509", "-inform", "DER", "-in", cer, "-noout", "-fingerprint", "-sha256")
    assert shown.strip().endswith(sha256)
    assert x509.load_pem_x509_certificate(pem.read_bytes()) == root
    # .p7c: a certs-only PKCS#7 holding exactly the root.
    printed = openssl("pkcs7", "-inform", "DER", "-in", p7c, "-print_certs")
    assert printed.count("BEGIN CERTIFICATE") == 1
    assert x509.load_pem_x509_certificates(printed.encode()) == [root]
    # The profile: a plist with one com.apple.security.root payload holding the root.
    document = plistlib.loads(profile.read_bytes())
    assert document["PayloadType"] == "Configuration"
    assert document["PayloadVersion"] == 1
    (payload,) = document["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    inside = tmp_path / "inside.cer"
    inside.write_bytes(payload["PayloadContent"])
    again = openssl("x509", "-inform", "DER", "-in", inside, "-noout", "-fingerprint", "-sha256")
    assert again.strip().endswith(sha256)
    assert re.fullmatch(r"[0-9A-F-]{36}", document["PayloadUUID"])
    assert dialogs == []

    # Only the kit's files are served under /trust/.
    for bad in ("/trust/root.key", "/trust/..%2Fconfig.toml", "/trust/README.html"):
        assert page.goto(f"{live.url}{bad}").status == 404  # type: ignore[union-attr]


def test_enrolled_person_takes_the_iphone_profile_instead_of_the_p12(
    page: Page, tmp_path: Path, smtp_server: SMTPServer, serve_portal: Any, screenshots: Path
) -> None:
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server)
    add_person(home, tmp_path, "ines,ines@example.com,Ines Iphone,Ines,Iphone,Porto,true")
    import_pin(home, tmp_path, "E-5001", "ines@example.com", "Ines Iphone", "61820457")
    live = serve_portal(home, sock)
    page.goto(live.url)
    pin_logon(page, "E-5001", "61820457")
    page.get_by_label("I have read this and accept it").check()
    page.get_by_role("button", name="Accept and make my certificate").click()
    expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()
    expect(page.get_by_text("the profile holds no password", exact=False)).to_be_visible()
    shot(page, screenshots, "72-download-with-iphone-profile")
    password = page.locator("#generated-password").inner_text().strip()
    p12_href = page.get_by_role("link", name=re.compile("Download ines@example.com.p12"))
    p12_url = p12_href.get_attribute("href")

    profile = save(page, "ines@example.com.mobileconfig", tmp_path)
    assert profile.name == "ines@example.com.mobileconfig"
    document = plistlib.loads(profile.read_bytes())
    assert document["PayloadType"] == "Configuration"
    kinds = {p["PayloadType"]: p for p in document["PayloadContent"]}
    assert set(kinds) == {"com.apple.security.pkcs12", "com.apple.security.root"}
    identity = kinds["com.apple.security.pkcs12"]
    assert "Password" not in identity  # iOS asks for it; it is nowhere in the file
    assert password.encode() not in profile.read_bytes()
    assert kinds["com.apple.security.root"]["PayloadContent"] == root_of(home).public_bytes(
        Encoding.DER
    )
    # The PKCS#12 inside opens with the password the page showed, with openssl.
    p12 = tmp_path / "inside.p12"
    p12.write_bytes(identity["PayloadContent"])
    pem = openssl("pkcs12", "-in", p12, "-nokeys", "-clcerts", "-passin", f"pass:{password}")
    certificate = x509.load_pem_x509_certificate(pem.encode())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.RFC822Name) == ["ines@example.com"]
    openssl("pkcs12", "-in", p12, "-nocerts", "-noenc", "-passin", f"pass:{password}")

    # One download: the .p12 form of it is spent now.
    page.goto(f"{live.url}/done")
    expect(page.get_by_text("ines@example.com.p12 downloaded")).to_be_visible()
    assert p12_url is not None
    handle = p12_url.rstrip("/").rsplit("/", 1)[1]  # the button is /fetch/HANDLE
    spent = page.goto(f"{live.url}/download/{handle}")
    assert spent is not None and spent.status == 404
    assert mailpki("audit", "verify", "--home", home).code == 0
