"""Fixtures for the integration suite: initialised instances on SQLite and PostgreSQL,
and `mailpki serve` as a separate process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.serve_process import SRC, ServeProcesses, free_port
from tests.integration.cli_helpers import mailpki

# Older tests import these names from here.
_free_port = free_port
__all__ = ["SRC", "_free_port"]


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


@pytest.fixture
def serve(sqlite_home: Path, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """`mailpki serve` as a separate process, started lazily; its output is tmp_path/serve.log."""
    processes = ServeProcesses(tmp_path)

    def start() -> str:
        return processes.start(sqlite_home, free_port(), timeout=30, log_name="serve.log").url

    yield start
    processes.stop_all()
