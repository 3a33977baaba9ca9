"""The `dns.*` settings, addresses of DNS servers, and TSIG key files.

A TSIG key file is what BIND's ``tsig-keygen NAME`` writes::

    key "NAME" {
        algorithm hmac-sha256;
        secret "BASE64";
    };

The secret stays in that file (keep it mode 600); the configuration only names it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailpki.base.settings import Setting, SettingsFile, int_range, optional_text
from mailpki.errors import ConfigError, InputError

if TYPE_CHECKING:
    import dns.tsig

__all__ = [
    "DnsSettings",
    "ServerAddress",
    "TsigKey",
    "dns_schema",
    "dns_settings_from",
    "parse_server",
    "parse_tsig_key",
    "read_tsig_key",
]

MAX_KEY_FILE = 16 * 1024
# HMAC algorithms dnspython and BIND share; HMAC-MD5 is refused (RFC 8945 deprecates it).
# (Names only: dnspython is imported where a name is checked or a key is used, so that
# loading the settings does not import it.)
ALGORITHMS = ("hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")
_KEY_RE = re.compile(
    r'\s*key\s+"?(?P<name>[A-Za-z0-9._-]{1,253})"?\s*\{'
    r"(?P<body>[^{}]*)\}\s*;\s*",
    re.ASCII,
)
_STATEMENT_RE = re.compile(r'\s*(?P<word>algorithm|secret)\s+"?(?P<value>[^";\s]+)"?\s*;', re.ASCII)


@dataclass(frozen=True)
class ServerAddress:
    """An IP address and UDP/TCP port of a DNS server."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_server(value: str) -> ServerAddress:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` (a literal address: no name to resolve
    through the very DNS being updated or checked)."""
    value = value.strip()
    host, port = value, "53"
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InputError(f"{value!r} is not IP, IP:PORT or [IPv6]:PORT")
        port = rest[1:] or "53"
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InputError(
            f"{value!r} is not IP, IP:PORT or [IPv6]:PORT (an address, not a host name)"
        ) from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"the port in {value!r} is not between 1 and 65535")
    return ServerAddress(str(address), int(port))


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key (RFC 8945): its name, HMAC algorithm and secret."""

    name: str
    algorithm: str
    secret: bytes = field(repr=False)

    def keyring(self) -> dns.tsig.Key:
        import dns.name
        import dns.tsig

        return dns.tsig.Key(dns.name.from_text(self.name), self.secret, algorithm=self.algorithm)


def parse_tsig_key(text: str, *, source: str = "the TSIG key file") -> TsigKey:
    """The one ``key`` statement of a BIND key file; InputError says what is wrong
    (never echoing the secret)."""
    text = re.sub(r"(#|//)[^\n]*", "", text)  # BIND comments
    match = _KEY_RE.fullmatch(text)
    if match is None:
        raise InputError(
            f'{source} is not one BIND key statement: key "NAME" {{ algorithm ...; secret "..."; }};'
        )
    values: dict[str, str] = {}
    body = match["body"]
    position = 0
    while position < len(body.rstrip()):
        statement = _STATEMENT_RE.match(body, position)
        if statement is None or statement["word"] in values:
            raise InputError(f"{source}: the key must hold one algorithm and one secret, no more")
        values[statement["word"]] = statement["value"]
        position = statement.end()
    if set(values) != {"algorithm", "secret"}:
        raise InputError(f"{source}: the key needs both an algorithm and a secret")
    algorithm = values["algorithm"].lower()
    if algorithm not in ALGORITHMS:
        raise InputError(
            f"{source}: algorithm {values['algorithm']!r} is not one of {', '.join(ALGORITHMS)}"
        )
    try:
        secret = base64.b64decode(values["secret"], validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{source}: the secret is not base64") from None
    if len(secret) < 16:
        raise InputError(
            f"{source}: the secret is shorter than 16 bytes; make one with tsig-keygen"
        )
    import dns.exception
    import dns.name

    try:
        dns.name.from_text(match["name"])
    except dns.exception.DNSException:
        raise InputError(f"{source}: the key name is not a DNS name") from None
    return TsigKey(match["name"], algorithm, secret)


def read_tsig_key(path: Path) -> TsigKey:
    try:
        data = path.read_bytes()[: MAX_KEY_FILE + 1]
    except OSError as exc:
        raise ConfigError(f"cannot read the TSIG key file {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise ConfigError(f"the TSIG key file {path} is too large to be a key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"the TSIG key file {path} is not ASCII text") from None
    try:
        return parse_tsig_key(text, source=f"the TSIG key file {path}")
    except InputError as exc:
        raise ConfigError(str(exc)) from None


def _optional_server(value: str) -> str:
    if not value.strip():
        return ""
    try:
        return str(parse_server(value))
    except InputError as exc:
        raise ValueError(str(exc)) from None


def _optional_zone(value: str) -> str:
    value = value.strip().rstrip(".").lower()
    if not value:
        return ""
    import dns.exception
    import dns.name

    try:
        dns.name.from_text(value + ".")
    except dns.exception.DNSException as exc:
        raise ValueError(f"is not a DNS zone name: {exc}") from None
    if any(c in value for c in " \t\\\"'"):
        raise ValueError("is not a DNS zone name")
    return value


def dns_schema() -> dict[str, Setting]:
    """The `dns.*` settings of an instance."""
    return {
        "dns.update_server": Setting(
            _optional_server,
            "",
            "primary DNS server for SMIMEA dynamic updates (RFC 2136), IP[:PORT]; empty: off",
        ),
        "dns.zone": Setting(_optional_zone, "", "zone the SMIMEA records are updated in"),
        "dns.tsig_key_file": Setting(
            optional_text, "", "BIND key file (tsig-keygen) signing the updates (relative to home)"
        ),
        "dns.ttl": Setting(int_range(60, 604_800), 3600, "TTL of the SMIMEA records"),
        "dns.resolver": Setting(
            _optional_server,
            "",
            "validating resolver IP[:PORT] for 'mail encrypt --dns' (empty: the system's)",
        ),
        "dns.timeout_seconds": Setting(int_range(1, 60), 5, "how long to wait for a DNS server"),
    }


@dataclass(frozen=True)
class DnsSettings:
    """Where and how SMIMEA updates are sent; None from `dns_settings_from` when off."""

    server: ServerAddress
    zone: str
    key: TsigKey = field(repr=False)
    ttl: int = 3600
    timeout: float = 5.0


def dns_settings_from(config: SettingsFile) -> DnsSettings | None:
    """The update settings, or None when `dns.update_server` is empty (updates off)."""
    server = str(config.get("dns.update_server"))
    if not server:
        return None
    zone = str(config.get("dns.zone"))
    if not zone:
        raise ConfigError("dns.update_server is set but dns.zone is not: name the zone to update")
    if not config.get("dns.tsig_key_file"):
        raise ConfigError(
            "dns.update_server is set but dns.tsig_key_file is not: updates must be signed "
            "(make a key with tsig-keygen)"
        )
    return DnsSettings(
        server=parse_server(server),
        zone=zone,
        key=read_tsig_key(config.path_of("dns.tsig_key_file")),
        ttl=int(config.get("dns.ttl")),
        timeout=float(config.get("dns.timeout_seconds")),
    )
