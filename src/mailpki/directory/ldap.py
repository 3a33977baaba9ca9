"""The LDAP adapter of the directory port: OpenLDAP and Active Directory, over ldap3.

One service-account connection serves lookups, searches and certificate publication
(opened lazily, re-opened once when it broke, serialised by a lock); password checks
bind on a fresh connection of their own. Every filter value goes through RFC 4515
escaping and every DN through RFC 4514 parsing, so what people type (logins, search
text) is only ever data. Anything ldap3 raises becomes a one-line DirectoryError that
names the directory and its URL, never a password.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
import threading
import unicodedata
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from mailpki.directory.entry import AD_ACCOUNT_DISABLE, MAPPINGS, AttributeMapping, DirectoryEntry
from mailpki.errors import ConfigError, DirectoryError, DirectoryUnavailable, InputError

T = TypeVar("T")

# userCertificate must be transferred with the ;binary option (RFC 4523; OpenLDAP
# rejects the plain name for writes, Active Directory accepts the option).
CERT_ATTR = "userCertificate;binary"
SMIME_ATTR = "userSMIMECertificate"

MAX_SEARCH_TEXT = 100
MAX_SEARCH_LIMIT = 1000  # Active Directory's default MaxPageSize
MAX_PASSWORD = 1024
MAX_LOGIN = 256
MAX_DN = 4096
PAGE_SIZE = 200
MAIL_BATCH = 50  # addresses per search of find_many_by_mail (2 pages' worth at most)
_PAGED_OID = "1.2.840.113556.1.4.319"

# LDAP result codes this adapter acts on (RFC 4511).
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_ATTRIBUTE = 16
_INAPPROPRIATE_MATCHING = 18
_VALUE_EXISTS = 20
_NO_SUCH_OBJECT = 32
_INVALID_DN_SYNTAX = 34
_INAPPROPRIATE_AUTH = 48
_INVALID_CREDENTIALS = 49
_INSUFFICIENT_ACCESS = 50
_UNWILLING = 53
# A bind refused for the person (wrong password, locked, bad DN), not an outage.
_BIND_REFUSED = {
    _NO_SUCH_OBJECT,
    _INVALID_DN_SYNTAX,
    _INAPPROPRIATE_AUTH,
    _INVALID_CREDENTIALS,
    _INSUFFICIENT_ACCESS,
    _UNWILLING,
}

# A connection that died under us: worth one reconnect. Timeouts are not retried:
# that would double the time a caller waits for a directory that does not answer.
_BROKEN = (
    ldap_exc.LDAPSocketOpenError,  # on a reused connection: "socket is not open"
    ldap_exc.LDAPSocketReceiveError,
    ldap_exc.LDAPSocketSendError,
    ldap_exc.LDAPSessionTerminatedByServerError,
    ldap_exc.LDAPSocketCloseError,
)


class _Refused(Exception):
    """The service account's bind was refused (internal: becomes DirectoryError)."""


class LdapDirectory:
    """A directory reached over LDAP; implements mailpki.directory.port.Directory."""

    def __init__(
        self,
        *,
        name: str,
        url: str,
        base_dn: str,
        bind_dn: str,
        bind_password: str,
        flavour: Literal["openldap", "ad"],
        domains: tuple[str, ...],
        netbios_domain: str = "",
        starttls: bool = False,
        ca_file: Path | None = None,
        timeout: float = 5.0,
        mapping: AttributeMapping | None = None,
    ) -> None:
        if flavour not in MAPPINGS:
            raise ConfigError(f"directory {name!r}: unknown flavour {flavour!r} (openldap, ad)")
        parts = urlsplit(url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ConfigError(f"directory {name!r}: {url!r} is not an ldap:// or ldaps:// URL")
        if starttls and parts.scheme == "ldaps":
            raise ConfigError(f"directory {name!r}: StartTLS makes no sense on ldaps:// ({url})")
        if not timeout > 0:
            raise ConfigError(f"directory {name!r}: timeout must be positive")
        if ca_file is not None and not Path(ca_file).is_file():
            raise ConfigError(f"directory {name!r}: CA file {ca_file} does not exist")
        for label, dn in (("base DN", base_dn), ("bind DN", bind_dn)):
            try:
                parse_dn(dn)
            except ldap_exc.LDAPException:
                raise ConfigError(f"directory {name!r}: {label} {dn!r} is not a DN") from None

        self.name = name
        self.domains = tuple(d.lower() for d in domains)
        self.url = url
        self.base_dn = base_dn
        self.bind_dn = bind_dn
        self.flavour = flavour
        self.netbios_domain = netbios_domain
        self.starttls = starttls
        self.ca_file = ca_file
        self.timeout = timeout
        self.mapping = mapping or MAPPINGS[flavour]
        self._password = bind_password
        self._host = parts.hostname
        self._port = parts.port or (636 if parts.scheme == "ldaps" else 389)
        self._tls = _Tls(ca_file, parts.hostname)
        self._lock = threading.RLock()
        self._conn: Any = None  # ldap3.Connection, opened lazily

    def __repr__(self) -> str:
        return (
            f"LdapDirectory(name={self.name!r}, url={self.url!r}, base_dn={self.base_dn!r}, "
            f"bind_dn={self.bind_dn!r}, flavour={self.flavour!r}, starttls={self.starttls})"
        )

    def __enter__(self) -> LdapDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connections -------------------------------------------------------------

    def _error(self, action: str, reason: object, *, outage: bool = False) -> DirectoryError:
        text = " ".join(str(reason).split())[:300] or type(reason).__name__
        kind = DirectoryUnavailable if outage else DirectoryError
        return kind(f"directory {self.name!r} ({self.url}): {action} failed: {text}")

    def _server(self) -> Any:
        # A new ldap3.Server per connection: a Server marks an address it failed to
        # reach as unavailable for 5 s, which would outlast a directory restart.
        return ldap3.Server(
            self._host,
            port=self._port,
            use_ssl=self.url.startswith("ldaps:"),
            tls=self._tls,
            get_info=ldap3.NONE,  # no schema round trip; attributes are asked for by name
            connect_timeout=self.timeout,
        )

    def _open(self, user: str, password: str) -> tuple[Any, dict[str, Any]]:
        """A new connection bound as `user`; returns it and the bind result."""
        conn = ldap3.Connection(
            self._server(),
            user=user,
            # bytes: sent as is; ldap3 would SASLprep a str, which neither OpenLDAP nor
            # AD do when they store a password.
            password=password.encode("utf-8"),
            client_strategy=ldap3.SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE,
            raise_exceptions=False,
            auto_referrals=False,
            return_empty_attributes=False,
            # ldap3 packs this into SO_RCVTIMEO as an integer: a float would crash it.
            receive_timeout=max(1, math.ceil(self.timeout)),
        )
        try:
            conn.open()
            if self.starttls and not conn.start_tls():
                raise ldap_exc.LDAPStartTLSError(f"StartTLS refused: {conn.result}")
            conn.bind()
        except BaseException:
            _quietly_unbind(conn)
            raise
        return conn, dict(conn.result or {})

    def _connection(self) -> Any:
        if self._conn is not None and self._conn.closed:
            self._drop()  # ldap3 closed it after an error or a notice of disconnection
        if self._conn is None:
            conn, result = self._open(self.bind_dn, self._password)
            if result.get("result") != _SUCCESS:
                _quietly_unbind(conn)
                raise _Refused(result.get("description") or result.get("result"))
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _quietly_unbind(conn)

    def _op(self, action: str, fn: Callable[[Any], T]) -> T:
        """Run `fn` on the service connection; reconnect once if it was broken."""
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None and not self._conn.closed
                try:
                    return fn(self._connection())
                except _Refused as exc:
                    raise self._error(
                        action, f"service account refused ({exc})", outage=True
                    ) from None
                except _BROKEN as exc:
                    self._drop()
                    if isinstance(exc, TimeoutError) or not reused or attempt == 2:
                        raise self._error(action, exc, outage=True) from None
                except (ldap_exc.LDAPException, OSError) as exc:
                    self._drop()
                    raise self._error(action, exc, outage=True) from None
            raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _check(self, conn: Any, action: str, ok: Iterable[int] = (_SUCCESS,)) -> int:
        code = int(conn.result["result"])
        if code not in ok:
            result = conn.result
            raise self._error(
                action, f"{result.get('description')} ({code}) {result.get('message', '')}"
            )
        return code

    # --- lookups -------------------------------------------------------------------

    def _filter(self, *clauses: str) -> str:
        oc = escape_filter_chars(self.mapping.object_class)
        return f"(&(objectClass={oc}){''.join(clauses)})"

    def _find_one(self, action: str, attribute: str, value: str) -> DirectoryEntry | None:
        search_filter = self._filter(f"({attribute}={escape_filter_chars(value)})")

        def run(conn: Any) -> list[dict[str, Any]]:
            # Two are enough to tell "ambiguous".
            conn.search(
                self.base_dn,
                search_filter,
                ldap3.SUBTREE,
                attributes=self.mapping.attributes(),
                size_limit=2,
                time_limit=max(1, math.ceil(self.timeout)),
            )
            self._check(conn, action, ok=(_SUCCESS, _SIZE_LIMIT_EXCEEDED))
            return _entries(conn.response)

        found = [e for e in (self._map(r) for r in self._op(action, run)) if e is not None]
        if len(found) > 1:
            raise DirectoryError(
                f"directory {self.name!r}: {attribute}={value!r} is ambiguous "
                f"({len(found)} or more entries)"
            )
        return found[0] if found else None

    def find_by_login(self, login: str) -> DirectoryEntry | None:
        login = login.strip()
        if not login or len(login) > MAX_LOGIN or _has_control(login):
            return None
        if "\\" in login:
            domain, _, user = login.partition("\\")
            # DOMAIN\user: only our own NETBIOS domain; another domain is not ours.
            if not self.netbios_domain or domain.casefold() != self.netbios_domain.casefold():
                return None
            if not user or "\\" in user:
                return None
            return self._find_one("login lookup", self.mapping.login[0], user)
        for attribute in self.mapping.login:
            if attribute.lower() == "userprincipalname" and "@" not in login:
                continue  # a UPN always has an @: skip the round trip
            entry = self._find_one("login lookup", attribute, login)
            if entry is not None:
                return entry
        if self.flavour == "openldap" and "@" in login:
            return self._find_one("login lookup", self.mapping.mail, login)
        return None

    def find_by_principal(self, user: str, realm: str) -> DirectoryEntry | None:
        """`user@realm` from a verified Kerberos ticket: the configured principal
        attribute; else AD's userPrincipalName (user@realm in lower case, the usual
        UPN), then sAMAccountName; else OpenLDAP's login attribute."""
        user, realm = user.strip(), realm.strip()
        if not user or not realm or len(user) + len(realm) > MAX_LOGIN:
            return None
        if _has_control(user + realm) or "@" in user or "/" in user or "\\" in user:
            return None
        action = "principal lookup"
        if self.mapping.kerberos_principal:
            return self._find_one(action, self.mapping.kerberos_principal, f"{user}@{realm}")
        if self.flavour == "ad":
            for attribute in self.mapping.login:
                value = (
                    f"{user}@{realm.lower()}" if attribute.lower() == "userprincipalname" else user
                )
                entry = self._find_one(action, attribute, value)
                if entry is not None:
                    return entry
            return None
        return self._find_one(action, self.mapping.login[0], user)

    def find_by_mail(self, mail: str) -> DirectoryEntry | None:
        mail = mail.strip().lower()
        if not mail or len(mail) > 254 or "@" not in mail or _has_control(mail):
            return None
        return self._find_one("mail lookup", self.mapping.mail, mail)

    def find_many_by_mail(self, mails: list[str]) -> dict[str, DirectoryEntry | None]:
        """One search per MAIL_BATCH addresses (an OR filter, every value escaped); a
        size-limited or failed search raises: a partial answer is not an answer."""
        wanted = sorted({m.strip().lower() for m in mails if m.strip()})
        found: dict[str, DirectoryEntry | None] = dict.fromkeys(wanted)
        usable = [m for m in wanted if len(m) <= 254 and "@" in m and not _has_control(m)]
        attribute = self.mapping.mail
        for start in range(0, len(usable), MAIL_BATCH):
            batch = usable[start : start + MAIL_BATCH]
            wanted_filter = "".join(f"({attribute}={escape_filter_chars(m)})" for m in batch)
            search_filter = self._filter(f"(|{wanted_filter})")

            def run(conn: Any, search_filter: str = search_filter) -> list[dict[str, Any]]:
                conn.search(
                    self.base_dn,
                    search_filter,
                    ldap3.SUBTREE,
                    attributes=self.mapping.attributes(),
                    time_limit=max(1, math.ceil(self.timeout)),
                    paged_size=PAGE_SIZE,
                )
                # Size limit exceeded: part of the answer is missing; refuse all of it.
                self._check(conn, "mail lookup")
                if (
                    (conn.result.get("controls") or {})
                    .get(_PAGED_OID, {})
                    .get("value", {})
                    .get("cookie")
                ):
                    raise self._error("mail lookup", "more entries than one page", outage=True)
                return _entries(conn.response)

            for response in self._op("mail lookup", run):
                entry = self._map(response)
                if entry is None or entry.mail is None or entry.mail not in found:
                    continue
                if found[entry.mail] is not None:
                    raise DirectoryError(
                        f"directory {self.name!r}: {attribute}={entry.mail!r} is ambiguous "
                        "(2 or more entries)"
                    )
                found[entry.mail] = entry
        return found

    def search(self, text: str, *, limit: int = 50) -> list[DirectoryEntry]:
        text = text.strip()
        if not text:
            raise InputError("search text is empty")
        if len(text) > MAX_SEARCH_TEXT:
            raise InputError(f"search text is longer than {MAX_SEARCH_TEXT} characters")
        if _has_control(text):
            raise InputError("search text contains control characters")
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise InputError(f"search limit must be between 1 and {MAX_SEARCH_LIMIT}")
        m = self.mapping
        names = [*m.login, m.mail, m.display_name, m.given_name, m.surname, *m.extra_search]
        prefix = escape_filter_chars(text)
        # The trailing * is ours (a prefix match); the text itself is escaped data.
        alternatives = "".join(f"({a}={prefix}*)" for a in dict.fromkeys(n for n in names if n))
        search_filter = self._filter(f"(|{alternatives})")
        page = min(limit, PAGE_SIZE)

        def run(conn: Any) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            cookie: bytes | None = None
            while True:
                conn.search(
                    self.base_dn,
                    search_filter,
                    ldap3.SUBTREE,
                    attributes=m.attributes(),
                    size_limit=limit,
                    time_limit=max(1, math.ceil(self.timeout)),
                    paged_size=page,
                    paged_cookie=cookie,
                )
                code = self._check(conn, "search", ok=(_SUCCESS, _SIZE_LIMIT_EXCEEDED))
                found.extend(_entries(conn.response))
                controls = conn.result.get("controls") or {}
                cookie = controls.get(_PAGED_OID, {}).get("value", {}).get("cookie") or None
                if code == _SIZE_LIMIT_EXCEEDED or len(found) >= limit or not cookie:
                    break
            if cookie:
                # Page size 0 ends the paged search on the server (RFC 2696): AD limits
                # how many a connection may leave open.
                conn.search(
                    self.base_dn,
                    search_filter,
                    ldap3.SUBTREE,
                    attributes=["1.1"],
                    paged_size=0,
                    paged_cookie=cookie,
                )
            return found[:limit]

        entries = [e for e in (self._map(r) for r in self._op("search", run)) if e is not None]
        entries.sort(key=lambda e: ((e.display_name or e.login).casefold(), e.dn.casefold()))
        return entries

    def _map(self, response: dict[str, Any]) -> DirectoryEntry | None:
        raw = response.get("raw_attributes") or {}
        m = self.mapping

        def values(name: str) -> list[str]:
            if not name:
                return []
            return [v.decode("utf-8", "replace") for v in raw.get(name) or []]

        def first(name: str) -> str | None:
            found = values(name)
            return found[0] if found else None

        login = next((v for a in m.login for v in values(a)), None)
        if login is None:
            return None  # not a person we could log in or issue to
        if m.account_control:
            try:
                enabled = not int(first(m.account_control) or "0") & AD_ACCOUNT_DISABLE
            except ValueError:
                enabled = False  # unreadable flags: do not take the account for enabled
        elif m.disabled_marker:
            enabled = not values(m.disabled_marker)
        else:
            enabled = True
        mail = first(m.mail)
        return DirectoryEntry(
            directory=self.name,
            dn=str(response["dn"]),
            login=login,
            mail=mail.lower() if mail else None,
            display_name=first(m.display_name) or first("cn"),
            given_name=first(m.given_name),
            surname=first(m.surname),
            organisation=first(m.organisation),
            site=first(m.site),
            enabled=enabled,
            groups=tuple(values(m.groups)),
            employee_id=first(m.employee_id),
        )

    # --- passwords -----------------------------------------------------------------

    def verify_password(self, entry: DirectoryEntry, password: str) -> bool:
        # An empty password would be an unauthenticated bind, which "succeeds".
        if not password or len(password) > MAX_PASSWORD:
            return False
        if not _is_dn(entry.dn):
            return False
        try:
            conn, result = self._open(entry.dn, password)
        except (ldap_exc.LDAPPasswordIsMandatoryError, ldap_exc.LDAPInvalidDnError):
            return False
        except (ldap_exc.LDAPException, OSError) as exc:
            raise self._error("password check", exc, outage=True) from None
        _quietly_unbind(conn)
        code = result.get("result")
        if code == _SUCCESS:
            return True
        if code in _BIND_REFUSED:
            return False
        raise self._error("password check", f"{result.get('description')} ({code})")

    # --- certificates ----------------------------------------------------------------

    def _read(self, conn: Any, dn: str) -> tuple[list[bytes], list[bytes]] | None:
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[CERT_ATTR, SMIME_ATTR])
        if self._check(conn, "certificate read", ok=(_SUCCESS, _NO_SUCH_OBJECT)) != _SUCCESS:
            return None
        found = _entries(conn.response)
        if not found:
            return None
        raw = found[0].get("raw_attributes") or {}
        certs = list(raw.get(CERT_ATTR) or raw.get("userCertificate") or [])
        return certs, list(raw.get(SMIME_ATTR) or [])

    def _publish(self, conn: Any, dn: str, der: bytes, cert: x509.Certificate) -> bool:
        current = self._read(conn, dn)
        if current is None:
            return False
        certs, smimes = current
        changes: dict[str, list[tuple[str, list[bytes]]]] = {}
        if der not in certs:
            changes[CERT_ATTR] = [(ldap3.MODIFY_ADD, [der])]
        blob = b""
        if not any(_holds(v, cert) for v in smimes):
            blob = pkcs7.serialize_certificates([cert], Encoding.DER)
            changes[SMIME_ATTR] = [(ldap3.MODIFY_ADD, [blob])]
        if not changes:
            return True
        conn.modify(dn, changes)
        # attributeOrValueExists: a concurrent publish of the same certificate was first.
        ok = (_SUCCESS, _VALUE_EXISTS, _NO_SUCH_OBJECT, _INAPPROPRIATE_MATCHING)
        code = self._check(conn, "publish", ok=ok)
        if code == _INAPPROPRIATE_MATCHING and blob:
            # OpenLDAP defines no equality rule for userSMIMECertificate: it refuses to
            # add a value next to existing ones (it cannot check for duplicates). Write
            # the whole attribute instead (a concurrent writer's change could be lost).
            changes[SMIME_ATTR] = [(ldap3.MODIFY_REPLACE, [*smimes, blob])]
            conn.modify(dn, changes)
            code = self._check(conn, "publish", ok=(_SUCCESS, _VALUE_EXISTS, _NO_SUCH_OBJECT))
        return code != _NO_SUCH_OBJECT

    def publish(self, dn: str, certificate_der: bytes) -> bool:
        dn, der, cert = _check_dn(dn), bytes(certificate_der), _load(certificate_der)
        return self._op("publish", lambda conn: self._publish(conn, dn, der, cert))

    def publish_many(self, items: list[tuple[str, bytes]]) -> int:
        """Publish a batch over the one connection; returns how many entries existed
        (now holding their certificate). Everything is validated before any write."""
        batch = [(_check_dn(dn), bytes(der), _load(der)) for dn, der in items]
        done = 0
        for dn, der, cert in batch:
            # One lock round per certificate: a long batch does not starve lookups.
            if self._op("publish", partial(self._publish, dn=dn, der=der, cert=cert)):
                done += 1
        return done

    def unpublish(self, dn: str, certificate_der: bytes) -> bool:
        dn, der, cert = _check_dn(dn), bytes(certificate_der), _load(certificate_der)

        def run(conn: Any) -> bool:
            for _ in range(2):  # a concurrent change between read and write: read again
                current = self._read(conn, dn)
                if current is None:
                    return False
                certs, smimes = current
                ours = [v for v in smimes if _holds(v, cert)]
                changes: dict[str, list[tuple[str, list[bytes]]]] = {}
                if der in certs:
                    changes[CERT_ATTR] = [(ldap3.MODIFY_DELETE, [der])]
                if ours:
                    changes[SMIME_ATTR] = [(ldap3.MODIFY_DELETE, ours)]
                if not changes:
                    return True
                conn.modify(dn, changes)
                code = self._check(
                    conn,
                    "unpublish",
                    ok=(_SUCCESS, _NO_SUCH_ATTRIBUTE, _NO_SUCH_OBJECT, _INAPPROPRIATE_MATCHING),
                )
                if code == _INAPPROPRIATE_MATCHING and ours:
                    # OpenLDAP defines no equality rule for userSMIMECertificate, so it
                    # cannot delete one value: write back the values that stay instead.
                    rest = [v for v in smimes if v not in ours]
                    changes[SMIME_ATTR] = [(ldap3.MODIFY_REPLACE, rest)]
                    conn.modify(dn, changes)
                    code = self._check(conn, "unpublish", ok=(_SUCCESS, _NO_SUCH_ATTRIBUTE))
                if code == _SUCCESS:
                    return True
                if code == _NO_SUCH_OBJECT:
                    return False
            raise self._error("unpublish", "the entry kept changing under us")

        return self._op("unpublish", run)

    def certificates(self, dn: str) -> list[bytes]:
        dn = _check_dn(dn)

        def run(conn: Any) -> list[bytes]:
            current = self._read(conn, dn)
            return current[0] if current is not None else []

        return self._op("certificate read", run)


class _Tls(ldap3.Tls):  # type: ignore[misc]
    """ldap3's TLS settings, with the certificate and name checked by OpenSSL itself
    during the handshake: ldap3's own name check uses ssl.match_hostname (deprecated;
    its fallback on Python 3.12+ refuses IP addresses such as 127.0.0.1)."""

    def __init__(self, ca_file: Path | None, host: str) -> None:
        cafile = str(ca_file) if ca_file is not None else None
        # CERT_NONE only tells ldap3 to skip its own name check after the handshake.
        super().__init__(validate=ssl.CERT_NONE, ca_certs_file=cafile)
        # CERT_REQUIRED + check_hostname; the system CAs when no CA file is given.
        self._context = ssl.create_default_context(cafile=cafile)
        self._host = host

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        # Without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to every TLS handshake
        # (measured against slapd): that is on every password check.
        with contextlib.suppress(OSError):
            connection.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.socket = self._context.wrap_socket(
            connection.socket, server_hostname=self._host, do_handshake_on_connect=do_handshake
        )


def _entries(response: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    # Active Directory adds search references (referrals) to subtree results.
    return [r for r in response or [] if r.get("type") == "searchResEntry"]


def _has_control(text: str) -> bool:
    # Escaping is not enough for NUL: slapd cuts an assertion value at "\x00", so
    # "(uid=\00*)" would match every entry. No login, mail or name has control chars.
    return any(unicodedata.category(c) == "Cc" for c in text)


def _quietly_unbind(conn: Any) -> None:
    # Closing a connection that is already gone is not an error worth reporting.
    with contextlib.suppress(ldap_exc.LDAPException, OSError):
        conn.unbind()


def _is_dn(dn: str) -> bool:
    if not dn or len(dn) > MAX_DN:
        return False
    try:
        parse_dn(dn)
    except ldap_exc.LDAPException:
        return False
    return True


def _check_dn(dn: str) -> str:
    if not _is_dn(dn):
        raise InputError(f"not a distinguished name: {dn[:100]!r}")
    return dn


def _load(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except ValueError:
        raise InputError("not a DER-encoded X.509 certificate") from None


def _holds(blob: bytes, cert: x509.Certificate) -> bool:
    """Whether a userSMIMECertificate value is a PKCS#7 bundle holding `cert`."""
    try:
        return cert in pkcs7.load_der_pkcs7_certificates(blob)
    except ValueError:
        return False  # not ours to judge: someone else's format stays untouched
