"""`mailpki serve` as a person starts it: the port is bound before "serving" is said, a
public URL that does not lead here is warned about, and every request is logged (one
line: method, path without secrets, status, time) with the reason of each refusal."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.serve_process import Served, ServeProcesses, free_port, serve_env
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[object]:
    processes = ServeProcesses(tmp_path)
    yield processes.start
    processes.stop_all()


def fetch(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_for(served: Served, pattern: str) -> str:
    deadline = time.monotonic() + 10
    while not re.search(pattern, served.text(), re.M):
        assert time.monotonic() < deadline, f"no line matching {pattern!r}:\n{served.text()}"
        time.sleep(0.05)
    return served.text()


def test_a_port_in_use_is_one_line_and_exit_1(sqlite_home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "mailpki", "serve", "--home", str(sqlite_home),
             "--port", str(port)],
            capture_output=True, text=True, env=serve_env(), timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "serving" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0] and str(port) in lines[0], lines


def test_demo_on_a_port_in_use_makes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "mailpki", "demo", "--home", str(home), "--port", str(port)],
            capture_output=True, text=True, env=serve_env(), timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1 and "already in use" in proc.stderr
    assert "serving" not in proc.stdout and not home.exists()


def test_serve_warns_when_the_public_url_does_not_lead_here(
    sqlite_home: Path, start_serve: object
) -> None:
    port, elsewhere = free_port(), free_port()
    mailpki("config", "set", "--home", sqlite_home, "web.base_url", f"http://127.0.0.1:{elsewhere}")
    served = start_serve(sqlite_home, port)  # type: ignore[operator]
    text = wait_for(served, r"serving .* on http://127\.0\.0\.1:")
    warning = re.search(r"^warning: web\.base_url .*$", text, re.M)
    assert warning and f"port {elsewhere}" in warning.group(0) and str(port) in warning.group(0)
    assert "config set" in text and "web.base_url" in text
    # The warning comes before the server says it serves.
    assert text.index("warning:") < text.index("serving ")


def test_no_warning_when_the_public_url_is_this_server(
    sqlite_home: Path, start_serve: object
) -> None:
    port = free_port()
    mailpki("config", "set", "--home", sqlite_home, "web.base_url", f"http://127.0.0.1:{port}")
    served = start_serve(sqlite_home, port)  # type: ignore[operator]
    assert "warning:" not in wait_for(served, r"serving ")


def test_every_request_is_logged_without_secrets(sqlite_home: Path, start_serve: object) -> None:
    port = free_port()
    mailpki("config", "set", "--home", sqlite_home, "web.base_url", f"http://127.0.0.1:{port}")
    served = start_serve(sqlite_home, port)  # type: ignore[operator]
    token = "S3cretInvitationToken0123456789abcdefghijklm"
    assert fetch(f"{served.url}/enroll/{token}") == 410
    assert fetch(f"{served.url}/certs?mail=hidden.person@example.com") == 404
    assert fetch(f"{served.url}/no-such-page") == 404
    assert fetch(f"{served.url}/ca/root.crt") == 200
    text = wait_for(served, r"GET /ca/root\.crt 200 ")
    assert token not in text and "hidden.person" not in text
    assert re.search(
        r"INFO mailpki\.access: GET /enroll/… 410 [\d.]+ ms 127\.0\.0\.1 [0-9a-f]{16} - \S", text
    )
    assert re.search(r"GET /certs\?mail=… 404 [\d.]+ ms 127\.0\.0\.1", text)
    assert re.search(r"GET /no-such-page 404 [\d.]+ ms 127\.0\.0\.1 [0-9a-f]{16} - Not Found", text)
    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO mailpki\.access: GET /health 200", text, re.M
    )


def test_log_level_warning_leaves_out_access_lines(sqlite_home: Path, start_serve: object) -> None:
    served = start_serve(sqlite_home, free_port(), "--log-level", "warning")  # type: ignore[operator]
    assert fetch(f"{served.url}/ca/root.crt") == 200
    time.sleep(0.5)
    assert "mailpki.access" not in served.text()


def test_a_bad_log_level_is_refused(sqlite_home: Path) -> None:
    result = mailpki("serve", "--home", sqlite_home, "--log-level", "loud")
    assert (
        result.code == 2 and "--log-level must be one of debug, info, warning, error" in result.err
    )
