"""The README's run command, as a new user follows it: `mailpki demo` prints where to
open the portal and how to log on; in Chromium that logon leads to a certificate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from playwright.sync_api import Page, expect

from tests.integration.conftest import SRC, _free_port

pytestmark = pytest.mark.integration

ROW = re.compile(r"^(\d{4})\s+(\d{8})\s+(\S+@example\.com)\s", re.M)


def test_demo_prints_a_logon_that_gets_a_certificate_in_the_browser(
    page: Page, tmp_path: Path, screenshots: Path
) -> None:
    home, port, log = tmp_path / "demo", _free_port(), tmp_path / "demo.log"
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailpki", "demo", "--home", str(home), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path, "COLUMNS": "120"},
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mailpki demo exited {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        printed = log.read_text()
        assert f"Open {url}" in printed
        employee_id, pin, mail = ROW.findall(printed)[0]

        page.goto(url)
        # The demo's people have PINs only, so only the PIN logon is offered.
        expect(page.get_by_label("Login", exact=True)).to_have_count(0)
        shot = screenshots / "51-demo-logon.png"
        page.screenshot(path=str(shot), full_page=True)
        page.get_by_label("Employee id (or mail address)").fill(employee_id)
        page.get_by_label("PIN", exact=True).fill(pin)
        page.get_by_role("button", name="Log on with PIN").click()
        expect(page.locator("#f-mail")).to_have_text(mail)
        page.get_by_label("I have read this and accept it").check()
        page.get_by_role("button", name="Accept and make my certificate").click()
        password = page.locator("#generated-password").inner_text().strip()
        with page.expect_download() as info:
            page.get_by_role("link", name=re.compile("Download")).click()
        target = tmp_path / "mine.p12"
        info.value.save_as(target)
        _, certificate, _ = pkcs12.load_key_and_certificates(target.read_bytes(), password.encode())
        assert certificate is not None
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.value.get_values_for_type(x509.RFC822Name) == [mail]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
