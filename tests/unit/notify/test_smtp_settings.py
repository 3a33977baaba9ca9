"""smtp.* settings: SMTP when a host is set, else .eml files; old mail.* files still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailpki.errors import ConfigError
from mailpki.instance.config import Config
from mailpki.notify.mail import mail_settings_from


def _config(home: Path, text: str) -> Config:
    (home / "config.toml").write_text(
        '[instance]\norg = "Example"\ndomain = "example.com"\n' + text, encoding="utf-8"
    )
    return Config.load(home)


def test_no_smtp_host_writes_eml_files_in_the_outbox(tmp_path: Path) -> None:
    settings = mail_settings_from(_config(tmp_path, ""), default_sender="pki@example.com")
    assert settings.transport == "folder"
    assert settings.folder == tmp_path / "outbox"
    assert settings.sender == "pki@example.com"


def test_smtp_host_selects_smtp(tmp_path: Path) -> None:
    (tmp_path / "smtp-password").write_text("s3cret\n", encoding="utf-8")
    config = _config(
        tmp_path,
        '[smtp]\nhost = "mx.example.com"\nport = 587\nfrom = "pki@example.com"\n'
        'starttls = "true"\nusername = "pki"\npassword_file = "smtp-password"\n',
    )
    settings = mail_settings_from(config, default_sender="x@example.com")
    assert (settings.transport, settings.smtp_host, settings.smtp_port) == (
        "smtp",
        "mx.example.com",
        587,
    )
    assert settings.starttls and settings.username == "pki" and settings.password == "s3cret"
    assert settings.sender == "pki@example.com"


def test_old_mail_names_still_load(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[mail]\ntransport = "smtp"\nfolder = "outbox"\nsmtp_host = "mx.example.com"\n'
        'smtp_port = 2525\nsender = "old@example.com"\n',
    )
    assert config.get("smtp.host") == "mx.example.com"
    assert config.get("smtp.port") == 2525
    assert config.get("smtp.from") == "old@example.com"


def test_a_new_name_wins_over_its_old_one(tmp_path: Path) -> None:
    config = _config(tmp_path, '[mail]\nsmtp_host = "old"\n[smtp]\nhost = "new"\n')
    assert config.get("smtp.host") == "new"


def test_old_names_cannot_be_set(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    with pytest.raises(ConfigError, match="unknown setting 'mail.smtp_host'"):
        config.set("mail.smtp_host", "mx")
    with pytest.raises(ConfigError, match="invalid value for 'smtp.port'"):
        config.set("smtp.port", "0")
