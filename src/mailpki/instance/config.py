"""The instance configuration: a TOML file with a fixed, checked schema.

Secrets never live here: the key passphrase comes from a file or an environment
variable that the configuration only names.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w

from mailpki.base.files import write_atomically
from mailpki.errors import ConfigError
from mailpki.keystore.keys import CA_KEY_TYPES, KEY_TYPES

CONFIG_FILE = "config.toml"


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters")
    return value.strip()


def _optional_text(value: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters")
    return value.strip()


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return value.rstrip("/")


def _optional_http_url(value: str) -> str:
    if not value.strip():
        return ""
    url = _http_url(value.strip())
    if not url.startswith("http://"):
        raise ValueError(
            "must be http:// (relying parties fetch CRLs and CA certificates without TLS)"
        )
    return url


def pki_url_from(base_url: str) -> str:
    """CDP and AIA are plain http (S/MIME BR 7.1.2.3): an https portal maps to http on the same host."""
    parts = urlsplit(base_url)
    if parts.scheme == "http":
        return base_url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}{parts.path}".rstrip("/")


def _choice(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return value

    return check


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return check


def _org_id(value: str) -> str:
    # S/MIME BR 7.1.4.2.2: scheme (NTR, VAT, PSD, LEI, GOV, INT) + country [+ state] - reference.
    value = value.strip()
    if value and not re.fullmatch(
        r"(NTR|VAT|PSD|LEI|GOV|INT)[A-Z]{2}(\+[A-Z0-9]{1,3})?-[^\s]{1,60}", value
    ):
        raise ValueError(
            "must be an S/MIME BR organisation identifier such as NTRGB-12345678, "
            "VATDE-123456789 or LEIXG-<your LEI>"
        )
    return value


def _database_url(value: str) -> str:
    if not (value.startswith("sqlite:///") or value.startswith("postgresql")):
        raise ValueError("must be sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB")
    return value


@dataclass(frozen=True)
class Setting:
    parse: Callable[[str], Any]
    default: Any
    help: str


SCHEMA: dict[str, Setting] = {
    "instance.org": Setting(_text, None, "organisation name, used in CA names"),
    "instance.domain": Setting(_text, None, "main mail domain"),
    "instance.org_id": Setting(
        _org_id,
        "",
        "organizationIdentifier for sponsor-validated certificates, e.g. NTRGB-12345678",
    ),
    "database.url": Setting(
        _database_url,
        "sqlite:///mailpki.db",
        "SQLAlchemy URL; sqlite paths are relative to the home",
    ),
    "web.base_url": Setting(
        _http_url, "http://localhost:8080", "public URL put in links, CDP and AIA"
    ),
    "web.pki_base_url": Setting(
        _optional_http_url,
        "",
        "URL for CDP and AIA if not derived from web.base_url (must be http://)",
    ),
    "keys.backend": Setting(_choice("file", "pkcs11"), "file", "where CA keys live"),
    "keys.passphrase_file": Setting(
        _optional_text,
        "secrets/ca-passphrase",
        "file holding the passphrase of the encrypted key files (relative to the home)",
    ),
    "keys.passphrase_env": Setting(
        _optional_text, "", "environment variable holding that passphrase (wins over the file)"
    ),
    "keys.pkcs11_module": Setting(_optional_text, "", "PKCS#11 module path"),
    "keys.pkcs11_token": Setting(_optional_text, "", "PKCS#11 token label"),
    "keys.pkcs11_pin_file": Setting(_optional_text, "", "file holding the token PIN"),
    "ca.key_type": Setting(
        _choice(*CA_KEY_TYPES), "rsa3072", "key type of the root and issuing CA"
    ),
    "ca.default_profile": Setting(
        _text, "sponsored-multipurpose", "profile used when none is named"
    ),
    "crl.partition_size": Setting(
        _int_range(100, 10_000_000), 100_000, "certificates per CRL partition"
    ),
    "crl.validity_hours": Setting(
        _int_range(1, 24 * 31), 168, "nextUpdate of the issuing CA's CRLs"
    ),
    "crl.root_validity_days": Setting(
        _int_range(1, 400), 365, "nextUpdate of the root CRL (offline root)"
    ),
    "ocsp.validity_hours": Setting(_int_range(1, 24 * 7), 24, "nextUpdate of OCSP responses"),
    "ocsp.key_type": Setting(_choice(*KEY_TYPES), "p256", "key type of the OCSP responder"),
    "audit.checkpoint_every": Setting(
        _int_range(1, 1_000_000), 100, "records between signed audit checkpoints"
    ),
}


class Config:
    """The checked configuration of one instance."""

    def __init__(self, values: dict[str, Any], path: Path) -> None:
        self._values = values
        self.path = path

    @property
    def home(self) -> Path:
        return self.path.parent

    def get(self, key: str) -> Any:
        if key not in SCHEMA:
            raise ConfigError(f"unknown setting '{key}'; known: {', '.join(sorted(SCHEMA))}")
        value = self._values.get(key, SCHEMA[key].default)
        if value is None:
            raise ConfigError(f"setting '{key}' is not set in {self.path}")
        return value

    def set(self, key: str, raw: str) -> Any:
        """Check and set one value (not saved until save())."""
        if key not in SCHEMA:
            raise ConfigError(f"unknown setting '{key}'; known: {', '.join(sorted(SCHEMA))}")
        try:
            value = SCHEMA[key].parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid value for '{key}': {exc}") from None
        self._values[key] = value
        return value

    def items(self) -> list[tuple[str, Any, bool]]:
        """(key, value, is_default) for every setting, sorted."""
        return [
            (key, self._values.get(key, SCHEMA[key].default), key not in self._values)
            for key in sorted(SCHEMA)
        ]

    def path_of(self, key: str) -> Path:
        """A path setting resolved against the home folder."""
        path = Path(str(self.get(key)))
        return path if path.is_absolute() else self.home / path

    @property
    def database_url(self) -> str:
        url = str(self.get("database.url"))
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
            return prefix + str((self.home / url[len(prefix) :]).resolve())
        return url

    def save(self) -> None:
        nested: dict[str, dict[str, Any]] = {}
        for key, value in sorted(self._values.items()):
            section, name = key.split(".", 1)
            nested.setdefault(section, {})[name] = value
        write_atomically(self.path, tomli_w.dumps(nested).encode())

    @classmethod
    def create(cls, home: Path, values: dict[str, str]) -> Config:
        config = cls({}, home / CONFIG_FILE)
        for key, raw in values.items():
            config.set(key, raw)
        return config

    @classmethod
    def load(cls, home: Path) -> Config:
        path = home / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(
                f"no mailpki instance at {home} (missing {CONFIG_FILE}); run 'mailpki init' first"
            )
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        values: dict[str, Any] = {}
        for section, table in raw.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: '{section}' must be a [section]")
            for name, value in table.items():
                key = f"{section}.{name}"
                if key not in SCHEMA:
                    raise ConfigError(f"{path}: unknown setting '{key}'")
                text = str(value).lower() if isinstance(value, bool) else str(value)
                try:
                    values[key] = SCHEMA[key].parse(text)
                except ValueError as exc:
                    raise ConfigError(f"{path}: invalid value for '{key}': {exc}") from None
        return cls(values, path)


def resolve_home(home: Path | None) -> Path:
    """--home, else $MAILPKI_HOME, else ./mailpki-data."""
    if home is not None:
        return home
    env = os.environ.get("MAILPKI_HOME")
    return Path(env) if env else Path("mailpki-data")
