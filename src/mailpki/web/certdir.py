"""The public certificate directory: a person's S/MIME certificate by mail address.

Outside correspondents look a certificate up to encrypt to someone; anyone may ask.
So: an address must be a plain addr-spec before the source sees it (anything else is
400 and is never echoed back), everything put into a page is escaped (subject names
come from the directory), lookups are rate-limited per client address, and a
certificate is published only when it also checks out here: within its validity,
emailProtection, the address in its SAN, signed by this instance's issuing CA.
Revocation is the source's part of the contract.

    GET /certs?mail=alice@example.com   HTML list of the valid certificates
    GET /certs/alice@example.com.pem    the newest (PEM), .cer (DER), .p7c (PKCS#7 + chain)
"""

from __future__ import annotations

import html
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailpki.ca.authority import display_name
from mailpki.ca.serials import show_serial
from mailpki.ca.settings import issuing_label

__all__ = [
    "HTML_CSP",
    "MAX_MAIL",
    "CertificateDirectorySource",
    "RateLimiter",
    "SecurityHeaders",
    "certdir_routes",
    "normalize_mail",
]

log = logging.getLogger(__name__)

MAX_MAIL = 254  # RFC 5321 path limit minus the angle brackets
# RFC 5322 dot-atom without '/' (legal in a local part, but never wanted in a URL path),
# '@', then a DNS name of at least two labels. Dots only between atoms: no '..'.
_ATOM = r"[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_MAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")
_SERIAL = re.compile(r"[0-9A-Fa-f]{1,40}")
_FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")

HTML_CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# Every directory response: also kept out of search engines (it lists people).
_DIRECTORY_HEADERS = {**COMMON_HEADERS, "X-Robots-Tag": "noindex, nofollow"}
_FOUND_CACHE = "public, max-age=60"  # like OCSP: a revocation shows within a minute
_P7C_TYPE = "application/pkcs7-mime; smime-type=certs-only"
MAX_GENERATIONS = 100  # issuing-CA rollovers looked for; one every few years


class CertificateDirectorySource(Protocol):
    def valid_certificates(self, mail: str) -> list[bytes]:
        """DER of the unrevoked, unexpired subscriber certificates of a lowercased
        address (matched in any case), newest first."""
        ...

    def ca_certificate(self, name: str) -> bytes | None:
        """ "issuing.crt" and "root.crt" (DER) are used to check and to chain."""
        ...


def normalize_mail(text: str) -> str | None:
    """The lowercased address if `text` is a plain addr-spec, else None."""
    if len(text) > MAX_MAIL or not _MAIL.fullmatch(text):
        return None
    return text.lower()


class RateLimiter:
    """A token bucket per client address, in memory (so per worker process).

    The address is uvicorn's: X-Forwarded-For when the peer is trusted (localhost or
    $FORWARDED_ALLOW_IPS), else the peer, so clients of an untrusted proxy share a bucket.
    """

    def __init__(
        self,
        per_minute: int,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        if per_minute < 1 or burst < 1:
            raise ValueError("the rate and the burst must be at least 1")
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = float(burst)
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)

    def take(self, client: str) -> float:
        """0.0 when the request may go ahead, else the seconds until it may."""
        now = self._clock()
        tokens, when = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        if client not in self._buckets and len(self._buckets) >= self._max_clients:
            self._prune(now)
        self._buckets[client] = (tokens, now)
        return wait

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is the same as none: forget those first. Under a
        # flood of distinct addresses forget the oldest half; they start full again.
        self._buckets = {
            client: (tokens, when)
            for client, (tokens, when) in self._buckets.items()
            if tokens + (now - when) * self.rate < self.burst
        }
        if len(self._buckets) >= self._max_clients:
            for client in list(self._buckets)[: self._max_clients // 2]:
                del self._buckets[client]


class SecurityHeaders:
    """Adds the common security headers to every response that does not set them.

    Plain ASGI rather than BaseHTTPMiddleware: OCSP is answered thousands of times a
    second and this must cost microseconds.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._extra = [(k.lower().encode(), v.encode()) for k, v in COMMON_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self._extra if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True)
class _Entry:
    """A certificate that passed the checks, with what the page shows of it."""

    certificate: x509.Certificate
    der: bytes
    issuer: x509.Certificate  # the issuing CA (of its generation) that signed it

    @property
    def serial(self) -> str:
        return show_serial(self.certificate.serial_number)

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    def uses(self) -> tuple[bool, bool]:
        """(signs, encrypts) from the key usage; no key usage means any."""
        try:
            usage = self.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return True, True
        signs = usage.digital_signature or usage.content_commitment
        return signs, usage.key_encipherment or usage.key_agreement


# Malformed, missing an extension, or not signed by the issuing CA.
_UNPUBLISHABLE = (
    ValueError,
    TypeError,
    InvalidSignature,
    x509.ExtensionNotFound,
    x509.DuplicateExtension,
)


def _check(
    der: bytes, mail: str, issuing: Sequence[x509.Certificate], now: datetime
) -> _Entry | None:
    """The certificate if it may be published for `mail` (signed by one of the
    instance's issuing CAs, of any generation), else None."""
    try:
        cert = x509.load_der_x509_certificate(der)
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            return None
        extensions = cert.extensions
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        try:
            if extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return None
        except x509.ExtensionNotFound:
            pass
        if ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku:
            return None
        if mail not in {m.lower() for m in san.get_values_for_type(x509.RFC822Name)}:
            return None
        issuer = next((ca for ca in issuing if ca.subject == cert.issuer), None)
        if issuer is None:
            return None
        cert.verify_directly_issued_by(issuer)
    except _UNPUBLISHABLE:
        return None
    return _Entry(cert, der, issuer)


def _preferred(entries: Sequence[_Entry]) -> _Entry:
    """The newest certificate that can encrypt (what a correspondent wants), else the newest."""
    return next((e for e in entries if e.uses()[1]), entries[0])


# -- pages ------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
ul.certs{list-style:none;padding:0}
li.cert{border-bottom:1px solid #ddd;padding:.5rem 0}
li.cert h2{font-size:1.1rem;margin:.3rem 0}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2rem 1rem;margin:0}
dd{margin:0;min-width:0}
a.download{margin-right:1rem}
code{font-size:.85em;overflow-wrap:anywhere}
input{width:20rem;max-width:100%}
.note{color:#555}
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _link(mail: str, ext: str, serial: str) -> str:
    # Relative to /certs, so the directory also works under a proxy's path prefix.
    return _e(f"certs/{quote(mail, safe='@')}.{ext}?serial={serial}")


# (title, inner HTML) -> the whole page: the portal's look when served with the portal.
PageFrame = Callable[[str, str], str]
# Every page in the portal's frame: no script at all, styles only from our files.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def _bare_frame(title: str, inner: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body><main>"
        f"{inner}</main></body></html>"
    )


def _page(
    title: str,
    body: str,
    *,
    mail: str = "",
    status: int = 200,
    frame: PageFrame | None = None,
) -> HTMLResponse:
    form = (
        '<form method="get" action="certs" role="search" class="lookup">'
        '<label for="mail">Mail address</label> '
        f'<input id="mail" name="mail" type="email" maxlength="{MAX_MAIL}" '
        f'value="{_e(mail)}" required> <button type="submit">Look up</button></form>'
    )
    inner = f'<h1>Certificate directory</h1>{form}<div class="certdir">{body}</div>'
    text = frame(title, inner) if frame is not None else _bare_frame(title, inner)
    headers = {
        **_DIRECTORY_HEADERS,
        "Content-Security-Policy": PAGE_CSP if frame is not None else HTML_CSP,
        "Cache-Control": _FOUND_CACHE if status == 200 and mail else "no-store",
    }
    return HTMLResponse(text, status_code=status, headers=headers)


def _listing(mail: str, entries: Sequence[_Entry]) -> str:
    """One block per certificate (a heading and a list of its details), not a table: long
    values wrap within the page, so nothing scrolls sideways at any width."""
    items = []
    for entry in entries:
        cert = entry.certificate
        signs, encrypts = entry.uses()
        use = " and ".join(u for u, ok in (("signing", signs), ("encryption", encrypts)) if ok)
        links = " ".join(
            f'<a class="download" href="{_link(mail, ext, entry.serial)}">{label}</a>'
            for ext, label in (("pem", "PEM"), ("cer", "DER (.cer)"), ("p7c", "PKCS#7 (.p7c)"))
        )
        items.append(
            f'<li class="cert"><h2>{_e(display_name(cert.subject))}</h2><dl>'
            f"<dt>Valid until</dt><dd>{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC</dd>"
            f"<dt>Use</dt><dd>{use}</dd>"
            f'<dt>SHA-256 fingerprint</dt><dd><code class="fingerprint">{entry.fingerprint}'
            f"</code></dd><dt>Serial</dt><dd><code>{entry.serial}</code></dd>"
            f'<dt>Download</dt><dd class="links">{links}</dd></dl></li>'
        )
    count = f"{len(entries)} valid certificate{'s' if len(entries) != 1 else ''}"
    return (
        f"<p>{count} for <strong>{_e(mail)}</strong>. Compare the fingerprint with the "
        "person through another channel before you rely on it.</p>"
        f'<ul class="certs">{"".join(items)}</ul>'
    )


def _plain(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(
        text,
        status_code=status,
        headers={**_DIRECTORY_HEADERS, "Cache-Control": "no-store", **(headers or {})},
    )


def _too_many(wait: float) -> Response:
    return _plain(
        "too many lookups; try again later", 429, {"Retry-After": str(max(1, math.ceil(wait)))}
    )


# -- routes -----------------------------------------------------------------------------


def certdir_routes(
    source: CertificateDirectorySource,
    *,
    rate_per_minute: int,
    burst: int = 10,
    blocking_source: bool = False,
    limiter: RateLimiter | None = None,
    frame: PageFrame | None = None,
) -> list[Route]:
    """The directory's routes; `blocking_source` runs lookups in the thread pool; `frame`
    wraps the HTML pages (the portal's look), else they are plain pages of their own."""
    limiter = limiter or RateLimiter(rate_per_minute, burst)
    cas: dict[str, x509.Certificate | None] = {}

    def ca(name: str) -> x509.Certificate | None:
        if name not in cas:
            der = source.ca_certificate(name)
            cas[name] = x509.load_der_x509_certificate(der) if der else None
        return cas[name]

    def issuing_cas() -> list[x509.Certificate]:
        """The issuing CA of every generation: issuing.crt, issuing-g2.crt, ..."""
        found: list[x509.Certificate] = []
        for generation in range(1, MAX_GENERATIONS + 1):
            certificate = ca(issuing_label(generation) + ".crt")
            if certificate is None:
                break
            found.append(certificate)
        return found

    def publishable(mail: str) -> list[_Entry]:
        issuing, _ = issuing_cas(), ca("root.crt")  # both loaded off the event loop
        if not issuing:
            log.error("certificate directory: no issuing CA certificate; publishing nothing")
            return []
        now = datetime.now(UTC)
        checked = [_check(der, mail, issuing, now) for der in source.valid_certificates(mail)]
        return [entry for entry in checked if entry is not None]

    async def lookup(mail: str) -> list[_Entry] | Response:
        try:
            if blocking_source:
                return await run_in_threadpool(publishable, mail)
            return publishable(mail)
        except Exception as exc:
            log.error("certificate directory source failed", exc_info=exc)
            return _plain("internal error", 500)

    def limited(request: Request) -> Response | None:
        # Checked on the event loop, so the buckets need no lock.
        wait = limiter.take(request.client.host if request.client else "")
        return _too_many(wait) if wait else None

    async def search(request: Request) -> Response:
        if refused := limited(request):
            return refused
        raw = request.query_params.get("mail", "").strip()
        if not raw:
            return _page("Certificate directory", "", frame=frame)
        mail = normalize_mail(raw)
        if mail is None:
            body = '<p class="note">That is not a plain mail address (name@example.com).</p>'
            return _page("Not a mail address", body, status=400, frame=frame)
        found = await lookup(mail)
        if isinstance(found, Response):
            return found
        if not found:
            body = f"<p>No valid certificate for <strong>{_e(mail)}</strong>.</p>"
            return _page("No certificate", body, mail=mail, status=404, frame=frame)
        return _page(f"Certificates for {mail}", _listing(mail, found), mail=mail, frame=frame)

    async def download(request: Request) -> Response:
        if refused := limited(request):
            return refused
        name: str = request.path_params["name"]
        # '/' can only come from the path converter or %2F: a traversal attempt.
        if len(name) > MAX_MAIL + 4 or "/" in name or "\\" in name or ".." in name:
            return _plain("bad request", 400)
        if not name.isprintable():
            return _plain("bad request", 400)
        stem, _, ext = name.rpartition(".")
        if ext not in ("pem", "cer", "p7c"):
            return _plain("not found", 404)
        mail = normalize_mail(stem)
        serial = request.query_params.get("serial")
        if mail is None or (serial is not None and not _SERIAL.fullmatch(serial)):
            return _plain("bad request", 400)
        found = await lookup(mail)
        if isinstance(found, Response):
            return found
        if serial is not None:
            found = [e for e in found if e.certificate.serial_number == int(serial, 16)]
        if not found:
            return _plain("no valid certificate for this address", 404)
        entry = _preferred(found)
        if ext == "pem":
            body, media = entry.certificate.public_bytes(Encoding.PEM), "application/x-pem-file"
        elif ext == "cer":
            body, media = entry.der, "application/pkix-cert"
        else:
            chain = [entry.certificate, *(c for c in (entry.issuer, ca("root.crt")) if c)]
            body, media = pkcs7.serialize_certificates(chain, Encoding.DER), _P7C_TYPE
        file_name = _FILE_NAME_UNSAFE.sub("_", mail) + "." + ext
        headers = {
            **_DIRECTORY_HEADERS,
            "Cache-Control": _FOUND_CACHE,
            "Content-Disposition": f'attachment; filename="{file_name}"',
        }
        return Response(body, media_type=media, headers=headers)

    return [
        Route("/certs", search, methods=["GET"]),
        Route("/certs/{name:path}", download, methods=["GET"]),
    ]
