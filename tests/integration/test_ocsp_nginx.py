"""`mailpki ocsp export` served by a real nginx with the documented configuration, as
written: GETs answered from the exported files (byte for byte, checked by `openssl
ocsp`), everything else passed to `mailpki serve`."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.x509 import ocsp

from tests.fixtures.ci_policy import in_ci
from tests.integration.cli_helpers import mailpki, openssl
from tests.integration.test_cli_ca import issue
from tests.integration.test_docs_commands import DOCS

EXPORT_DIR = "/var/lib/mailpki/ocsp/"
UPSTREAM = "127.0.0.1:8080"


def readme_nginx_config() -> str:
    text = (DOCS / "operations.md").read_text()
    section = text.split("## Pre-signed OCSP answers, and nginx in front", 1)[1]
    block = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert block, "docs/operations.md lost its nginx configuration"
    return block.group(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[Path, str], str]]:
    """Starts Debian's nginx with the documented server block (paths and ports swapped)."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        if in_ci():
            pytest.fail("nginx is not installed")
        pytest.skip("nginx is not installed")
    procs: list[subprocess.Popen[bytes]] = []

    def start(export_dir: Path, upstream: str) -> str:
        port = _free_port()
        site = readme_nginx_config()
        for needle in (EXPORT_DIR, UPSTREAM, "listen 80;"):
            assert needle in site, f"the documented nginx configuration lost {needle!r}"
        site = site.replace(EXPORT_DIR, f"{export_dir}/").replace(UPSTREAM, upstream)
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
        run = tmp_path / "nginx"
        run.mkdir()
        temp_paths = "".join(
            f"    {kind}_temp_path {run}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read tmp_path
        (run / "nginx.conf").write_text(
            f"daemon off;\n{user}worker_processes 1;\npid {run}/nginx.pid;\n"
            f"error_log {run}/error.log info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n    access_log off;\n{temp_paths}{site}\n}}\n"
        )
        checked = subprocess.run(
            [binary, "-t", "-c", str(run / "nginx.conf"), "-p", str(run)],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(
            [binary, "-c", str(run / "nginx.conf"), "-p", str(run)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return f"http://127.0.0.1:{port}"
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"nginx did not start: {(run / 'error.log').read_text()}")
                time.sleep(0.05)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _request(home: Path, cert: Path, out: Path, *extra: str) -> bytes:
    openssl(
        "ocsp",
        "-issuer",
        home / "ca" / "issuing.pem",
        *extra,  # a digest option must come before -cert
        "-cert",
        cert,
        "-no_nonce",
        "-reqout",
        out,
    )
    return out.read_bytes()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _verify(home: Path, tmp_path: Path, der: bytes, cert: Path) -> str:
    path = tmp_path / "answer.der"
    path.write_bytes(der)
    out = openssl(
        "ocsp",
        "-respin",
        path,
        "-issuer",
        home / "ca" / "issuing.pem",
        "-cert",
        cert,
        "-CAfile",
        home / "ca" / "root.pem",
    )
    assert "Response verify OK" in out.stdout + out.stderr
    return out.stdout


def test_nginx_serves_the_export(
    sqlite_home: Path,
    tmp_path: Path,
    serve: Callable[[], str],
    nginx: Callable[[Path, str], str],
) -> None:
    home = sqlite_home
    alice_pem, _ = issue(home, tmp_path, "alice")
    bob_pem, bob = issue(home, tmp_path, "bob")
    assert mailpki("ca", "revoke", "--home", home, bob, "--reason", "keyCompromise").code == 0

    export = tmp_path / "export"
    result = mailpki("ocsp", "export", "--home", home, "--out", export)
    assert result.code == 0, result.err
    files = [p for p in export.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(files) >= 3  # alice, bob, the OCSP responder's own certificate
    assert f"{len(files)} answers written" in result.out

    mailpki_url = serve()
    base = nginx(export, mailpki_url.removeprefix("http://"))

    for cert, expected in ((alice_pem, "good"), (bob_pem, "revoked")):
        request = _request(home, cert, tmp_path / "req.der")
        encoded = base64.b64encode(request).decode()
        exported = (export / encoded).read_bytes()
        # RFC 5019 GET with %-encoded base64, as clients send it.
        path = encoded.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
        status, headers, body = _get(f"{base}/ocsp/{path}")
        assert status == 200
        assert body == exported  # nginx served the file
        assert headers["Content-Type"] == "application/ocsp-response"
        assert "max-age=3600" in headers["Cache-Control"]
        assert f": {expected}" in _verify(home, tmp_path, body, cert)
        # curl, as docs/operations.md suggests for a GET check, gets the same bytes.
        curl = subprocess.run(
            ["curl", "-sf", f"{base}/ocsp/{path}"], capture_output=True, check=False
        )
        if curl.returncode == 0 or in_ci():
            assert curl.stdout == exported

    # A SHA-256 CertID has no file: nginx passes the GET to mailpki, which signs it.
    request = _request(home, alice_pem, tmp_path / "req256.der", "-sha256")
    path = base64.b64encode(request).decode().replace("+", "%2B").replace("/", "%2F")
    status, headers, body = _get(f"{base}/ocsp/{path.replace('=', '%3D')}")
    assert status == 200 and headers["Content-Type"] == "application/ocsp-response"
    assert ocsp.load_der_ocsp_response(body).certificate_status is ocsp.OCSPCertStatus.GOOD

    # POST with a nonce, through nginx to mailpki, with the real openssl client.
    for url in (f"{base}/ocsp", f"{base}/ocsp/"):
        out = openssl(
            "ocsp",
            "-issuer",
            home / "ca" / "issuing.pem",
            "-cert",
            bob_pem,
            "-url",
            url,
            "-CAfile",
            home / "ca" / "root.pem",
        )
        assert ": revoked" in out.stdout
        assert "Response verify OK" in out.stdout + out.stderr


def test_export_refuses_bad_folders(sqlite_home: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = mailpki("ocsp", "export", "--home", sqlite_home, "--out", a_file)
    assert result.code != 0 and "not a folder" in result.err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    result = mailpki("ocsp", "export", "--home", sqlite_home, "--out", foreign)
    assert result.code != 0 and "not empty" in result.err
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


def test_export_again_removes_what_is_no_longer_valid(sqlite_home: Path, tmp_path: Path) -> None:
    issue(sqlite_home, tmp_path, "alice")
    export = tmp_path / "export"
    assert mailpki("ocsp", "export", "--home", sqlite_home, "--out", export).code == 0
    leftover = export / "AAAA" / "old"
    leftover.parent.mkdir()
    leftover.write_bytes(b"\x30\x00")
    again = mailpki("ocsp", "export", "--home", sqlite_home, "--out", export)
    assert again.code == 0, again.err
    assert "1 old files removed" in again.out
    assert not leftover.parent.exists()
