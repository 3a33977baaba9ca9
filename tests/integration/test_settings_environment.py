"""Settings from the environment (`MAILPKI_<SECTION>_<KEY>`, `..._FILE`), through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cli_helpers import mailpki


def test_environment_overrides_the_file_and_is_never_saved(
    sqlite_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILPKI_WEB_BASE_URL", "https://pki.example.org")
    shown = mailpki("config", "get", "--home", sqlite_home, "web.base_url")
    assert shown.code == 0, shown.err
    assert shown.out.strip() == "https://pki.example.org"

    refused = mailpki("config", "set", "--home", sqlite_home, "web.base_url", "https://x.example")
    assert refused.code != 0
    assert "MAILPKI_WEB_BASE_URL" in refused.err
    # Another setting can still be changed, and the override does not leak into the file.
    changed = mailpki("config", "set", "--home", sqlite_home, "auth.max_failures", "7")
    assert changed.code == 0, changed.err
    assert "pki.example.org" not in (sqlite_home / "config.toml").read_text()

    monkeypatch.delenv("MAILPKI_WEB_BASE_URL")
    assert (
        "pki.example.org" not in mailpki("config", "get", "--home", sqlite_home, "web.base_url").out
    )


def test_a_secret_setting_comes_from_a_file(
    sqlite_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "smtp-password-file"
    secret.write_text("/run/secrets/smtp\n")
    monkeypatch.setenv("MAILPKI_KEYS_PASSPHRASE_ENV_FILE", str(tmp_path / "absent"))
    result = mailpki("config", "get", "--home", sqlite_home, "keys.passphrase_env")
    assert result.code != 0
    assert "MAILPKI_KEYS_PASSPHRASE_ENV_FILE" in result.err and "cannot be read" in result.err
    monkeypatch.delenv("MAILPKI_KEYS_PASSPHRASE_ENV_FILE")

    monkeypatch.setenv("MAILPKI_AUTH_MAX_FAILURES_FILE", str(secret))
    secret.write_text("9\nignored second line\n")
    assert mailpki("config", "get", "--home", sqlite_home, "auth.max_failures").out.strip() == "9"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"MAILPKI_AUTH_MAX_FAILURES": "many"}, "invalid value in MAILPKI_AUTH_MAX_FAILURES"),
        (
            {"MAILPKI_AUTH_MAX_FAILURES": "5", "MAILPKI_AUTH_MAX_FAILURES_FILE": "/dev/null"},
            "not both",
        ),
        ({"MAILPKI_WEB_BASE_URL": "ftp://nowhere"}, "invalid value in MAILPKI_WEB_BASE_URL"),
    ],
)
def test_bad_environment_values_are_refused_with_the_variable_named(
    sqlite_home: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = mailpki("certs", "list", "--home", sqlite_home)
    assert result.code != 0
    assert message in result.err


def test_the_recovery_service_reads_its_own_prefix_only(
    sqlite_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance's MAILPKI_DATABASE_URL must not move the embedded service's database."""
    from mailpki.recovery.config import ServiceConfig

    monkeypatch.setenv("MAILPKI_DATABASE_URL", "sqlite:///elsewhere.db")
    service = ServiceConfig.load(sqlite_home / "krs")
    assert service.get("database.url") == "sqlite:///krs.db"
    monkeypatch.setenv("MAILPKI_KRS_DATABASE_URL", "sqlite:///moved.db")
    assert ServiceConfig.load(sqlite_home / "krs").source_of("database.url") == (
        "MAILPKI_KRS_DATABASE_URL"
    )
