"""The server's listening socket, and whether the public URL leads to it.

The socket is bound (and listening) before anything says "serving": a port in use is a
one-line error, never a success message followed by a traceback.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable
from typing import Any

from mailpki.errors import MailPKIError

__all__ = ["ListenError", "base_url_problem", "listen"]

BACKLOG = 2048  # uvicorn's default
_ANY = ("0.0.0.0", "::", "")  # noqa: S104 - names the wildcard, binds nothing
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class ListenError(MailPKIError):
    """The address cannot be listened on (in use, not this machine's, not allowed)."""


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port and listening; ListenError says why not."""
    if not 1 <= port <= 65535:
        raise ListenError(f"--port must be between 1 and 65535, not {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"cannot serve on {where}: the address is already in use (another server "
                "is running there; stop it or choose another --port)"
            ) from None
        if exc.errno == errno.EACCES:
            raise ListenError(
                f"cannot serve on {where}: permission denied (ports below 1024 need "
                "privileges; choose a --port above 1024)"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenError(
                f"cannot serve on {where}: {host} is not an address of this machine (--host)"
            ) from None
        reason = exc.strerror or str(exc)
        raise ListenError(f"cannot serve on {where}: {reason}") from None
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        sock.close()
        raise ListenError(f"cannot serve on {host}:{port}: {exc} (--host)") from None
    sock.set_inheritable(True)  # worker processes share it
    return sock


Resolver = Callable[[str], set[str]]


def _resolve(name: str) -> set[str]:
    infos: list[Any] = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return {str(info[4][0]) for info in infos}


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def base_url_problem(
    base_url: str, host: str, port: int, *, resolve: Resolver = _resolve
) -> str | None:
    """Why links under `base_url` would not reach a server listening on host:port, or None.

    A name that does not resolve is a problem; an http URL that names this machine's
    loopback (or the --host address) must name the port too. An https URL, or one that
    resolves elsewhere, is taken to be a reverse proxy in front of this server, which
    cannot be checked from here."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"web.base_url {base_url!r} is not an http(s) URL: links in mails will not open"
    try:
        url_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"web.base_url {base_url!r} has no valid port: links in mails will not open"
    name = parts.hostname
    if name in _LOOPBACK_NAMES:
        addresses = {"127.0.0.1"}
    elif _is_address(name):
        addresses = {name}
    else:
        try:
            addresses = resolve(name)
        except (OSError, UnicodeError):
            return (
                f"web.base_url {base_url} names {name}, which does not resolve here: links "
                "in mails and the certificates' revocation URLs will not open"
            )
    if parts.scheme == "https":
        return None  # this server speaks plain http: an https URL is a TLS proxy's
    bound = host.strip("[]")
    local = {a for a in addresses if _is_loopback(a) or a == bound}
    if not local:
        return None  # another machine: a proxy in front of this one, presumably
    if bound in _ANY:
        reached = local
    else:
        reached = {a for a in local if a == bound or (_is_loopback(a) and _is_loopback(bound))}
    if not reached:
        return (
            f"web.base_url {base_url} names {name} ({', '.join(sorted(local))}), but this "
            f"server listens on {host} only: links in mails will not reach it"
        )
    if url_port != port:
        return (
            f"web.base_url {base_url} points at port {url_port}, but this server listens on "
            f"port {port}: links in mails will not reach it"
        )
    return None
