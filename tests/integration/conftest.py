"""Fixtures for the integration suite: initialised instances on SQLite and PostgreSQL."""

from __future__ import annotations

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
