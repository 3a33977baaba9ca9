"""Settings files: TOML with a fixed, checked schema (instance and recovery service).

Secrets never live in them: a setting only names the file or environment variable
that holds one.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import tomli_w

from mailpki.base.files import write_atomically
from mailpki.errors import ConfigError


def text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters")
    return value.strip()


def optional_text(value: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters")
    return value.strip()


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return value.rstrip("/")


def optional_http_url(value: str) -> str:
    if not value.strip():
        return ""
    url = http_url(value.strip())
    if not url.startswith("http://"):
        raise ValueError(
            "must be http:// (relying parties fetch CRLs and CA certificates without TLS)"
        )
    return url


def choice(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return value

    return check


def int_range(low: int, high: int) -> Callable[[str], int]:
    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return check


def database_url_setting(value: str) -> str:
    if not (value.startswith("sqlite:///") or value.startswith("postgresql")):
        raise ValueError("must be sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB")
    return value


@dataclass(frozen=True)
class Setting:
    parse: Callable[[str], Any]
    default: Any
    help: str


class SettingsFile:
    """A checked settings file; subclasses name the schema and the file."""

    schema: ClassVar[dict[str, Setting]] = {}
    file_name: ClassVar[str] = "config.toml"
    missing_hint: ClassVar[str] = ""
    # Settings renamed since files were written: old key -> new key (None: dropped,
    # its meaning now follows from other settings). Old files still load.
    renamed: ClassVar[dict[str, str | None]] = {}
    # Environment variables `<prefix><SECTION>_<KEY>` override the file ("" = none).
    env_prefix: ClassVar[str] = ""

    def __init__(
        self,
        values: dict[str, Any],
        path: Path,
        overrides: dict[str, tuple[Any, str]] | None = None,
    ) -> None:
        self._values = values
        self.path = path
        # key -> (value, the environment variable it came from); never saved to the file.
        self._overrides = overrides or {}

    @property
    def home(self) -> Path:
        return self.path.parent

    def get(self, key: str) -> Any:
        if key not in self.schema:
            raise ConfigError(f"unknown setting '{key}'; known: {', '.join(sorted(self.schema))}")
        if key in self._overrides:
            return self._overrides[key][0]
        value = self._values.get(key, self.schema[key].default)
        if value is None:
            raise ConfigError(f"setting '{key}' is not set in {self.path}")
        return value

    def set(self, key: str, raw: str) -> Any:
        """Check and set one value (not saved until save())."""
        if key not in self.schema:
            raise ConfigError(f"unknown setting '{key}'; known: {', '.join(sorted(self.schema))}")
        if key in self._overrides:
            raise ConfigError(
                f"'{key}' is set by {self._overrides[key][1]} in the environment; change it there"
            )
        try:
            value = self.schema[key].parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid value for '{key}': {exc}") from None
        self._values[key] = value
        return value

    def items(self) -> list[tuple[str, Any, bool]]:
        """(key, value, is_default) for every setting, sorted."""
        return [
            (
                key,
                self._overrides[key][0]
                if key in self._overrides
                else self._values.get(key, self.schema[key].default),
                key not in self._values and key not in self._overrides,
            )
            for key in sorted(self.schema)
        ]

    def source_of(self, key: str) -> str | None:
        """The environment variable that sets `key`, or None when the file (or the
        default) does."""
        override = self._overrides.get(key)
        return override[1] if override else None

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
    def create(cls, home: Path, values: dict[str, str]) -> Self:
        config = cls({}, home / cls.file_name)
        for key, raw in values.items():
            config.set(key, raw)
        return config

    @classmethod
    def load(cls, home: Path) -> Self:
        path = home / cls.file_name
        if not path.is_file():
            raise ConfigError(
                f"{cls.missing_hint or 'no settings'} at {home} (missing {cls.file_name})"
            )
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        values: dict[str, Any] = {}
        for section, table in raw.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: '{section}' must be a [section]")
            for name, value in _flattened(table):
                key = f"{section}.{name}"
                if key in cls.renamed:
                    new_key = cls.renamed[key]
                    if new_key is None or new_key in table_keys(raw, new_key):
                        continue
                    key = new_key
                if key not in cls.schema:
                    raise ConfigError(f"{path}: unknown setting '{key}'")
                text = str(value).lower() if isinstance(value, bool) else str(value)
                try:
                    values[key] = cls.schema[key].parse(text)
                except ValueError as exc:
                    raise ConfigError(f"{path}: invalid value for '{key}': {exc}") from None
        return cls(values, path, cls._environment_overrides(os.environ))

    @classmethod
    def environment_name(cls, key: str) -> str:
        """`web.base_url` -> `MAILPKI_WEB_BASE_URL` (with this file's prefix)."""
        return cls.env_prefix + key.replace(".", "_").upper()

    @classmethod
    def _environment_overrides(cls, environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
        """Settings given as `<PREFIX><SECTION>_<KEY>=value`, or read from the file named by
        `<PREFIX><SECTION>_<KEY>_FILE` (for secrets: the first line, no line ending)."""
        if not cls.env_prefix:
            return {}
        found: dict[str, tuple[Any, str]] = {}
        for key, setting in cls.schema.items():
            name = cls.environment_name(key)
            direct, from_file = environ.get(name), environ.get(f"{name}_FILE")
            if direct is not None and from_file is not None:
                raise ConfigError(f"set {name} or {name}_FILE in the environment, not both")
            if direct is None and from_file is None:
                continue
            source = name if direct is not None else f"{name}_FILE"
            raw = direct if direct is not None else _read_setting_file(from_file or "", source)
            try:
                found[key] = (setting.parse(raw), source)
            except ValueError as exc:
                raise ConfigError(f"invalid value in {source} for '{key}': {exc}") from None
        return found


def _read_setting_file(path: str, variable: str) -> str:
    try:
        data = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{variable} names {path}, which cannot be read: {exc}") from None
    lines = data.splitlines()
    return lines[0] if lines else ""


def _flattened(table: dict[str, Any]) -> list[tuple[str, Any]]:
    """`[auth.kerberos] keytab = …` read as the setting `auth.kerberos.keytab`."""
    items: list[tuple[str, Any]] = []
    for name, value in table.items():
        if isinstance(value, dict):
            items.extend((f"{name}.{sub}", inner) for sub, inner in _flattened(value))
        else:
            items.append((name, value))
    return items


def table_keys(raw: dict[str, Any], key: str) -> set[str]:
    """{key} if the parsed TOML sets `key` itself (a new name wins over its old one)."""
    section, name = key.split(".", 1)
    table = raw.get(section)
    return {key} if isinstance(table, dict) and name in table else set()
