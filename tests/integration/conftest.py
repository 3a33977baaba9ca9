"""Fixtures for the integration suite: initialised instances on SQLite and PostgreSQL,
and `mailpki serve` as a separate process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.cli_helpers import mailpki


@pytest.fixture
def home(tmp_path: Path, database_url: str) -> Path:
    """An instance with a P-256 CA (fast) on each database."""
    target = tmp_path / "corp"
    result = mailpki(
        "init",
        "--home",
        target,
        "--org",
        "Example Corp",
        "--domain",
        "example.com",
        "--ca-key-type",
        "p256",
        "--database",
        database_url,
        "--org-id",
        "NTRGB-12345678",
    )
    assert result.code == 0, result.err
    return target


@pytest.fixture
def sqlite_home(tmp_path: Path) -> Path:
    target = tmp_path / "corp"
    result = mailpki(
        "init",
        "--home",
        target,
        "--org",
        "Example Corp",
        "--domain",
        "example.com",
        "--ca-key-type",
        "p256",
        "--org-id",
        "NTRGB-12345678",
    )
    assert result.code == 0, result.err
    return target


SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serve(sqlite_home: Path, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """`mailpki serve` as a separate process; started lazily by the test."""
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "serve.log"

    def start() -> str:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mailpki", "serve", "--home", str(sqlite_home),
                 "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )  # fmt: skip
        procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mailpki serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        return url
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mailpki serve did not start:\n{log.read_text()}")
            time.sleep(0.1)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
