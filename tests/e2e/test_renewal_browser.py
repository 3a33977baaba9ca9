"""Renewal in the portal, as a person does it, in headless Chromium against a real slapd
and a real SMTP server: the expiry notice's link, logon with the directory password,
"Renew", the new PKCS#12 downloaded once; the old certificate superseded (not revoked)
and the new one published in slapd in its place."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from playwright.sync_api import Page, expect

from tests.e2e.conftest import bind_free_socket
from tests.e2e.test_enrollment_browser import (
    LINK_RE,
    add_openldap,
    download,
    mails_to,
    make_home,
    ok,
    open_pkcs12,
    published,
    shot,
)
from tests.fixtures.slapd import SlapdServer, clear_certificates
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration


def short_profile(home: Path) -> None:
    """Certificates of the default profile live 20 days: within the 60-day window."""
    packaged = resources.files("mailpki.policy").joinpath("profiles", "sponsored-multipurpose.toml")
    text = re.sub(r"(?m)^validity_days = \d+$", "validity_days = 20", packaged.read_text("utf-8"))
    (home / "profiles" / "sponsored-multipurpose.toml").write_text(text)


def test_expiry_notice_link_logon_renew_download(
    page: Page,
    tmp_path: Path,
    openldap_server: SlapdServer,
    smtp_server: SMTPServer,
    serve_portal: Any,
    screenshots: Path,
) -> None:
    alice = openldap_server.users["alice"]
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server, ("keymanager.key_type", "p256"))
    add_openldap(home, openldap_server)
    short_profile(home)
    try:
        enrolled = ok(mailpki("enroll", "--home", home, "--user", "alice", "--out",
                              tmp_path / "old.p12"))  # fmt: skip
        old = enrolled.out.split("certificate ")[1].split(",")[0]
        assert re.fullmatch(r"[0-9A-F]{32}", old), enrolled.out
        ok(mailpki("lifecycle", "run", "--home", home))
        [notice] = [m for m in mails_to(smtp_server, alice.mail or "") if "expires" in m["Subject"]]
        [link] = LINK_RE.findall(notice.text)

        serve_portal(home, sock)
        page.goto(link)
        page.get_by_label("Login", exact=True).fill("alice")
        page.get_by_label("Password", exact=True).fill(alice.password or "")
        page.get_by_role("button", name="Log on", exact=True).click()
        # The offer says when the certificate expires, and shows no serial: the employee
        # does not need it (padded or not).
        offer = page.locator("#renewal")
        expect(offer).to_contain_text(
            re.compile(r"Your certificate expires on \d{4}-\d{2}-\d{2} \(\d+ days\)")
        )
        text = offer.inner_text()
        assert old not in text and old.lstrip("0") not in text
        assert not re.search(r"serial|[0-9A-Fa-f]{16}", text, re.I), text
        shot(page, screenshots, "renew-01-offer")
        page.get_by_role("button", name="Renew", exact=True).click()

        expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()
        password = page.locator("#generated-password").inner_text().strip()
        shot(page, screenshots, "renew-02-download")
        p12 = download(page, tmp_path, "alice@example.com-renewed.p12")
        certificate = open_pkcs12(p12, password)
        new = f"{certificate.serial_number:X}"
        assert new != old
        assert published(openldap_server, alice.dn, certificate.public_bytes(Encoding.DER))

        listed = ok(mailpki("certs", "expiring", "--home", home, "--json")).out
        assert f'"renewed_by": "{new}"' in listed
        assert "superseded" in ok(mailpki("certs", "list", "--home", home)).out
    finally:
        clear_certificates(openldap_server)
