from __future__ import annotations

from pathlib import Path

import pytest

from mailpki.errors import ConfigError
from mailpki.instance.config import Config, pki_url_from, resolve_home


def make(tmp_path: Path) -> Config:
    config = Config.create(
        tmp_path, {"instance.org": "Example Corp", "instance.domain": "example.com"}
    )
    config.save()
    return config


def test_round_trip_and_defaults(tmp_path: Path) -> None:
    make(tmp_path)
    loaded = Config.load(tmp_path)
    assert loaded.get("instance.org") == "Example Corp"
    assert loaded.get("crl.partition_size") == 100_000
    assert loaded.database_url == f"sqlite:///{(tmp_path / 'mailpki.db').resolve()}"
    defaults = {key for key, _, is_default in loaded.items() if is_default}
    assert "instance.org" not in defaults and "web.base_url" in defaults


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("web.base_url", "ftp://x", "http"),
        ("web.base_url", "http://", "host"),
        ("web.base_url", "http://x/?q=1", "query"),
        ("crl.partition_size", "ten", "whole number"),
        ("crl.partition_size", "5", "between"),
        ("keys.backend", "vault", "one of"),
        ("instance.org", "   ", "empty"),
        ("instance.org", "a\x00b", "control"),
        ("instance.org_id", "ACME-1", "organisation identifier"),
        ("web.pki_base_url", "https://pki.example.com", "http://"),
        ("database.url", "mysql://x", "sqlite"),
        ("no.such", "1", "unknown setting"),
    ],
)
def test_bad_values_refused_and_nothing_changes(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    config = make(tmp_path)
    before = (tmp_path / "config.toml").read_bytes()
    with pytest.raises(ConfigError, match=message):
        config.set(key, value)
    assert (tmp_path / "config.toml").read_bytes() == before


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mailpki init"):
        Config.load(tmp_path)
    (tmp_path / "config.toml").write_text("[instance\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(tmp_path)
    (tmp_path / "config.toml").write_text('[instance]\nfoo = "x"\n')
    with pytest.raises(ConfigError, match="unknown setting 'instance.foo'"):
        Config.load(tmp_path)
    (tmp_path / "config.toml").write_text('[crl]\npartition_size = "many"\n')
    with pytest.raises(ConfigError, match="crl.partition_size"):
        Config.load(tmp_path)
    (tmp_path / "config.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError):
        Config.load(tmp_path)


def test_pki_urls_are_plain_http() -> None:
    assert pki_url_from("http://pki.example.com:8080") == "http://pki.example.com:8080"
    assert pki_url_from("https://portal.example.com") == "http://portal.example.com"
    assert pki_url_from("https://portal.example.com:8443/pki") == "http://portal.example.com/pki"


def test_resolve_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MAILPKI_HOME", raising=False)
    assert resolve_home(None) == Path("mailpki-data")
    monkeypatch.setenv("MAILPKI_HOME", str(tmp_path))
    assert resolve_home(None) == tmp_path
    assert resolve_home(Path("x")) == Path("x")
