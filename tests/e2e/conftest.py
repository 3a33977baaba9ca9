"""End-to-end fixtures: Debian's Chromium driven by Playwright, the portal served in-process.

Playwright is told to use /usr/bin/chromium: `playwright install` would
download a browser, and the machines have no internet beyond the package registries.
Screenshots go to $MAILPKI_ARTIFACTS (default ./artifacts) /screenshots, one per page.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("MAILPKI_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]


def _require_chromium() -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    _require_chromium()
    return {"executable_path": CHROMIUM, "args": ["--disable-gpu", "--disable-quic"]}


@pytest.fixture(scope="session")
def browser_context_args() -> dict[str, Any]:
    return {"accept_downloads": True, "viewport": {"width": 1100, "height": 900}}


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get("MAILPKI_ARTIFACTS", ROOT / "artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class LiveServer:
    url: str
    port: int


def bind_free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def serve_portal() -> Iterator[Any]:
    """serve_portal(home, sock) -> LiveServer: the instance's app in a uvicorn thread on
    an already bound socket (so web.base_url can name the port before the app starts)."""
    import uvicorn

    from mailpki.web.server import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(home: Path, sock: socket.socket) -> LiveServer:
        app = create_app(home)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the portal did not start")
            time.sleep(0.02)
        servers.append((server, thread))
        port = sock.getsockname()[1]
        return LiveServer(f"http://127.0.0.1:{port}", port)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)
