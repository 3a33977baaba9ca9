"""Whether an S/MIME signer's (or a recipient's) certificate can be trusted.

`mailpki.cms.signed.verify_signed` proves only that the key in a certificate signed
the content; this module decides whether that certificate deserves trust:

- a chain to one of the given roots, built and checked by cryptography's
  `x509.verification` with an S/MIME extension policy (the end entity needs an
  ExtendedKeyUsage with emailProtection; a CA's EKU, when it has one, must allow
  emailProtection or anyExtendedKeyUsage);
- validity at the given time, extended key usage, key usage fitting the purpose
  (sign: digitalSignature or nonRepudiation; encrypt: keyEncipherment for RSA,
  keyAgreement for EC);
- the mail address among the certificate's rfc822Name SANs (the subject's
  emailAddress only when there is no SAN extension at all). The whole address is
  compared case-insensitively (as mail clients and mailpki's own certificate
  directory do), with an internationalised domain compared in its A-label form;
- revocation of the end entity and of the intermediate CAs through a
  `RevocationChecker`: OCSP first (the AIA URL), then the CRL (the CDP URL).

Nothing here touches the database: it takes plain inputs. `check_certificate` never
raises for a bad certificate; every failed check is one human-readable problem in the
verdict. Only bad arguments raise `InputError`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    SignatureAlgorithmOID,
)
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from mailpki.errors import InputError

__all__ = [
    "CertificateVerdict",
    "Fetch",
    "Purpose",
    "RevocationChecker",
    "RevocationResult",
    "TrustAnchors",
    "check_certificate",
    "http_fetch",
]

NO_CHAIN = "no chain to a trusted root"

Purpose = Literal["sign", "encrypt"]
RevocationState = Literal["good", "revoked", "unknown", "not-checked"]
Fetch = Callable[[str, bytes | None, str], bytes]
"""`fetch(url, data, content_type) -> body`: POST `data` (of `content_type`) when it is
not None, else GET (asking for `content_type`). Raises on any failure."""

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
CRL_TYPE = "application/pkix-crl"

# Revocations with these reasons do not undo what the key did before them: a
# signature made before such a revocation (`at` earlier than it) still counts.
_BENIGN_REASONS = frozenset(
    {
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.cessation_of_operation,
    }
)
_REASON_NAMES: dict[x509.ReasonFlags, str] = {
    x509.ReasonFlags.unspecified: "unspecified",
    x509.ReasonFlags.key_compromise: "keyCompromise",
    x509.ReasonFlags.ca_compromise: "cACompromise",
    x509.ReasonFlags.affiliation_changed: "affiliationChanged",
    x509.ReasonFlags.superseded: "superseded",
    x509.ReasonFlags.cessation_of_operation: "cessationOfOperation",
    x509.ReasonFlags.certificate_hold: "certificateHold",
    x509.ReasonFlags.privilege_withdrawn: "privilegeWithdrawn",
    x509.ReasonFlags.aa_compromise: "aACompromise",
    x509.ReasonFlags.remove_from_crl: "removeFromCRL",
}
_ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE
_EMAIL = ExtendedKeyUsageOID.EMAIL_PROTECTION


def _utc(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC)


def _when(when: dt.datetime) -> str:
    return f"{_utc(when):%Y-%m-%d %H:%M:%S} UTC"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        return str(names[0].value)
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:X}"


# ---- trust anchors ------------------------------------------------------------------


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


@dataclass(frozen=True)
class TrustAnchors:
    """The roots a chain must end at, and CA certificates that may help build it
    (intermediates are not trusted by themselves: they must chain to a root)."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.roots, tuple) or not isinstance(self.intermediates, tuple):
            raise InputError("TrustAnchors takes tuples of certificates")
        if not self.roots:
            raise InputError("TrustAnchors needs at least one root certificate")
        for cert in (*self.roots, *self.intermediates):
            if not isinstance(cert, x509.Certificate):
                raise InputError(f"not a certificate: {type(cert).__name__}")

    @classmethod
    def from_pem_files(
        cls, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
    ) -> TrustAnchors:
        """Every certificate in the PEM files: the self-signed ones become roots, the
        others intermediates (so `mailpki ca chain` output can be given as it is)."""
        files = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        roots: list[x509.Certificate] = []
        intermediates: list[x509.Certificate] = []
        for path in files:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
            try:
                certs = x509.load_pem_x509_certificates(data)
            except ValueError:
                raise InputError(f"{path} holds no PEM certificate") from None
            for cert in certs:
                (roots if _self_signed(cert) else intermediates).append(cert)
        if not roots:
            raise InputError("none of the files holds a self-signed root certificate")
        return cls(tuple(roots), tuple(intermediates))


# ---- fetching -----------------------------------------------------------------------


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise OSError(f"refusing a redirect to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]


def http_fetch(
    url: str,
    data: bytes | None,
    content_type: str,
    *,
    timeout: float = 10.0,
    max_bytes: int = 64 * 1024 * 1024,
) -> bytes:
    """GET (data None) or POST `url` over http(s) with urllib; at most `max_bytes`."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise OSError(f"not an http URL: {url}")
    headers = {"Accept": OCSP_RESPONSE_TYPE if data is not None else content_type}
    if data is not None:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (scheme checked)
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    with opener.open(request, timeout=timeout) as response:
        body = cast(bytes, response.read(max_bytes + 1))
    if len(body) > max_bytes:
        raise OSError(f"the answer is larger than {max_bytes} bytes")
    return body


# ---- revocation ---------------------------------------------------------------------


@dataclass(frozen=True)
class RevocationResult:
    """One certificate's revocation status as a responder or CRL stated it."""

    status: Literal["good", "revoked", "unknown"]
    source: str = ""  # "ocsp URL" or "crl URL"; "" when no source answered
    reason: str | None = None  # RFC 5280 reason name, for "revoked"
    revoked_at: dt.datetime | None = None
    detail: str = ""  # why the status is unknown
    expires: dt.datetime | None = field(default=None, compare=False, repr=False)

    def at(self, when: dt.datetime) -> RevocationResult:
        """The status as it stood at `when`: a revocation after `when` for a benign
        reason (superseded, affiliationChanged, cessationOfOperation) did not yet count."""
        if (
            self.status == "revoked"
            and self.revoked_at is not None
            and self.revoked_at > when
            and self.reason in {_REASON_NAMES[r] for r in _BENIGN_REASONS}
        ):
            return RevocationResult("good", self.source, expires=self.expires)
        return self


class _Unusable(Exception):
    """A response or CRL that cannot be relied on; the message says why."""


def _verify_signature(
    key: object,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | None,
    oid: x509.ObjectIdentifier,
) -> None:
    """InvalidSignature/_Unusable unless `key` made `signature` over `data`."""
    if isinstance(key, rsa.RSAPublicKey):
        if algorithm is None:
            raise _Unusable("unsupported signature algorithm")
        pad: padding.AsymmetricPadding
        if oid == SignatureAlgorithmOID.RSASSA_PSS:
            pad = padding.PSS(padding.MGF1(algorithm), padding.PSS.AUTO)
        else:
            pad = padding.PKCS1v15()
        key.verify(signature, data, pad, algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if algorithm is None:
            raise _Unusable("unsupported signature algorithm")
        key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key.verify(signature, data)
    else:
        raise _Unusable(f"unsupported signer key {type(key).__name__}")


def _key_id(cert: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey bits: the OCSP ResponderID byKey."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _is_responder(cert: x509.Certificate, response: ocsp.OCSPResponse) -> bool:
    if response.responder_key_hash is not None:
        return _key_id(cert) == response.responder_key_hash
    return response.responder_name == cert.subject


def _urls(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(OCSP URLs from the AIA, full-CRL URLs from the CDP), http(s) only."""
    ocsp_urls: list[str] = []
    crl_urls: list[str] = []
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        aia = x509.AuthorityInformationAccess([])
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            desc.access_location, x509.UniformResourceIdentifier
        ):
            ocsp_urls.append(desc.access_location.value)
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        cdp = x509.CRLDistributionPoints([])
    for point in cdp:
        # Indirect CRLs and CRLs for only some reasons are not enough on their own.
        if point.crl_issuer or point.reasons or not point.full_name:
            continue
        for name in point.full_name:
            if isinstance(name, x509.UniformResourceIdentifier):
                crl_urls.append(name.value)

    def http(urls: list[str]) -> list[str]:
        return [u for u in urls if urllib.parse.urlsplit(u).scheme.lower() in ("http", "https")]

    return http(ocsp_urls), http(crl_urls)


@dataclass
class _CachedCRL:
    crl: x509.CertificateRevocationList
    expires: dt.datetime
    verified_for: set[bytes] = field(default_factory=set)


class RevocationChecker:
    """OCSP first (the AIA URL), then the CRL (the CDP URL), over HTTP.

    - Statuses are cached in memory per (issuer, serial) until the answer's nextUpdate
      or `max_age` after it was fetched, whichever comes first; an "unknown" (nothing
      answered) is cached for `unknown_ttl` so a dead responder costs one timeout, not
      one per message. CRLs are cached per URL the same way.
    - An OCSP response must be signed by the issuer or by a responder certificate
      carried in it, issued (and signed) by the issuer, with id-kp-OCSPSigning, valid
      now; it must answer for this exact CertID (and echo our nonce if it echoes one).
    - A CRL must be signed by the issuer, name it, be a complete CRL (no delta, no
      indirect, no reason subset) whose Issuing Distribution Point, if any, covers the
      URL it came from and end-entity or CA certificates as appropriate.
    - Both must be current: thisUpdate not in the future and nextUpdate not passed (with
      `skew` of tolerance); without nextUpdate, thisUpdate no older than `max_age`.
      Freshness is judged on `clock()` (now), whatever `at` the status is asked for.
    - `fetch` is injectable (tests, proxies); by default `http_fetch` with `timeout`,
      `max_ocsp_bytes` for OCSP answers and `max_crl_bytes` for CRLs.
    """

    def __init__(
        self,
        *,
        fetch: Fetch | None = None,
        clock: Callable[[], dt.datetime] = _now,
        timeout: float = 10.0,
        max_age: dt.timedelta = dt.timedelta(hours=1),
        unknown_ttl: dt.timedelta = dt.timedelta(minutes=5),
        skew: dt.timedelta = dt.timedelta(minutes=5),
        use_ocsp: bool = True,
        use_crl: bool = True,
        max_ocsp_bytes: int = 1024 * 1024,
        max_crl_bytes: int = 64 * 1024 * 1024,
        max_entries: int = 10_000,
        max_crls: int = 32,
    ) -> None:
        if timeout <= 0 or max_ocsp_bytes <= 0 or max_crl_bytes <= 0:
            raise InputError("timeout and size limits must be positive")
        if max_age <= dt.timedelta(0) or unknown_ttl < dt.timedelta(0):
            raise InputError("max_age must be positive and unknown_ttl not negative")
        if skew < dt.timedelta(0) or max_entries < 1 or max_crls < 1:
            raise InputError("skew must not be negative and the cache sizes positive")
        self._fetch_fn = fetch
        self._clock = clock
        self._timeout = timeout
        self._max_age = max_age
        self._unknown_ttl = unknown_ttl
        self._skew = skew
        self._use_ocsp = use_ocsp
        self._use_crl = use_crl
        self._max_ocsp_bytes = max_ocsp_bytes
        self._max_crl_bytes = max_crl_bytes
        self._max_entries = max_entries
        self._max_crls = max_crls
        self._lock = threading.Lock()
        self._results: OrderedDict[tuple[bytes, int], RevocationResult] = OrderedDict()
        self._crls: OrderedDict[str, _CachedCRL] = OrderedDict()

    # -- public --------------------------------------------------------------------

    def status(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        *,
        at: dt.datetime | None = None,
    ) -> tuple[str, str]:
        """("good" | "revoked" | "unknown", source) of `certificate` issued by `issuer`."""
        result = self.check(certificate, issuer, at=at)
        return result.status, result.source

    def check(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        *,
        at: dt.datetime | None = None,
    ) -> RevocationResult:
        """The full answer (reason, revocation time, why unknown) behind `status`."""
        if not isinstance(certificate, x509.Certificate) or not isinstance(
            issuer, x509.Certificate
        ):
            raise InputError("status() takes two certificates")
        if at is not None and at.tzinfo is None:
            raise InputError("`at` must be timezone-aware")
        now = _utc(self._clock())
        key = (issuer.fingerprint(hashes.SHA256()), certificate.serial_number)
        with self._lock:
            cached = self._results.get(key)
            if cached is not None and cached.expires is not None and cached.expires > now:
                self._results.move_to_end(key)
                return cached.at(_utc(at) if at else now)
        result = self._lookup(certificate, issuer, now)
        with self._lock:
            self._results[key] = result
            self._results.move_to_end(key)
            while len(self._results) > self._max_entries:
                self._results.popitem(last=False)
        return result.at(_utc(at) if at else now)

    def clear(self) -> None:
        """Forget every cached status and CRL."""
        with self._lock:
            self._results.clear()
            self._crls.clear()

    # -- the work ------------------------------------------------------------------

    def _fetch(self, url: str, data: bytes | None, content_type: str) -> bytes:
        limit = self._max_ocsp_bytes if data is not None else self._max_crl_bytes
        if self._fetch_fn is None:
            body = http_fetch(url, data, content_type, timeout=self._timeout, max_bytes=limit)
        else:
            body = self._fetch_fn(url, data, content_type)
        if not isinstance(body, bytes):
            raise OSError("the fetch function returned no bytes")
        if len(body) > limit:
            raise OSError(f"the answer is larger than {limit} bytes")
        return body

    def _lookup(
        self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
    ) -> RevocationResult:
        if cert.issuer != issuer.subject:
            return RevocationResult(
                "unknown",
                detail=f"{_subject(issuer)} is not the issuer of {_subject(cert)}",
                expires=now + self._unknown_ttl,
            )
        ocsp_urls, crl_urls = _urls(cert)
        failures: list[str] = []
        if self._use_ocsp:
            for url in ocsp_urls:
                try:
                    return self._ask_ocsp(url, cert, issuer, now)
                except Exception as exc:  # any failure of this source: try the next
                    failures.append(f"OCSP {url}: {_describe(exc)}")
        if self._use_crl:
            for url in crl_urls:
                try:
                    return self._ask_crl(url, cert, issuer, now)
                except Exception as exc:
                    failures.append(f"CRL {url}: {_describe(exc)}")
        if not failures:
            detail = "the certificate names no OCSP responder or CRL"
            if (ocsp_urls and not self._use_ocsp) or (crl_urls and not self._use_crl):
                detail = "no enabled revocation source for the certificate"
        else:
            detail = "; ".join(failures)
        return RevocationResult("unknown", detail=detail, expires=now + self._unknown_ttl)

    def _check_times(
        self,
        this_update: dt.datetime,
        next_update: dt.datetime | None,
        now: dt.datetime,
    ) -> dt.datetime:
        """_Unusable unless current; returns until when the answer may be cached."""
        if this_update > now + self._skew:
            raise _Unusable(f"thisUpdate {_when(this_update)} is in the future")
        if next_update is not None:
            if next_update < now - self._skew:
                raise _Unusable(f"stale: its nextUpdate {_when(next_update)} has passed")
            return min(next_update, now + self._max_age)
        if this_update < now - self._max_age:
            raise _Unusable(f"stale: issued {_when(this_update)} without a nextUpdate")
        return now + self._max_age

    # OCSP (RFC 6960) ------------------------------------------------------------------

    def _ask_ocsp(
        self, url: str, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
    ) -> RevocationResult:
        # SHA-1 CertIDs are what every responder understands (RFC 5019); the hash only
        # identifies the certificate, the response's own signature is what is trusted.
        nonce = os.urandom(16)
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, issuer, hashes.SHA1())  # noqa: S303
            .add_extension(x509.OCSPNonce(nonce), critical=False)
            .build()
        )
        body = self._fetch(url, request.public_bytes(serialization.Encoding.DER), OCSP_REQUEST_TYPE)
        try:
            response = ocsp.load_der_ocsp_response(body)
        except ValueError:
            raise _Unusable("not an OCSP response") from None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise _Unusable(f"the responder answered {response.response_status.name}")
        self._check_ocsp_signer(response, issuer, now)
        try:
            echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None
        if echoed is not None and echoed != nonce:
            raise _Unusable("the response carries another request's nonce")
        single = _matching_single_response(response, cert, issuer)
        expires = self._check_times(single.this_update_utc, single.next_update_utc, now)
        source = f"ocsp {url}"
        if single.certificate_status == ocsp.OCSPCertStatus.GOOD:
            return RevocationResult("good", source, expires=expires)
        if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
            reason = single.revocation_reason or x509.ReasonFlags.unspecified
            return RevocationResult(
                "revoked",
                source,
                reason=_REASON_NAMES.get(reason, reason.value),
                revoked_at=single.revocation_time_utc,
                expires=expires,
            )
        raise _Unusable("the responder does not know the certificate")

    def _check_ocsp_signer(
        self, response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime
    ) -> None:
        if _is_responder(issuer, response):
            signer = issuer
        else:
            candidates = [c for c in response.certificates if _is_responder(c, response)]
            if not candidates:
                raise _Unusable("signed by a responder that is neither the issuer nor delegated")
            signer = candidates[0]
            problem = _delegation_problem(signer, issuer, now, self._skew)
            if problem:
                raise _Unusable(problem)
        try:
            _verify_signature(
                signer.public_key(),
                response.signature,
                response.tbs_response_bytes,
                _hash_of(response),
                response.signature_algorithm_oid,
            )
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            raise _Unusable("the response signature does not verify") from None

    # CRL (RFC 5280) -------------------------------------------------------------------

    def _ask_crl(
        self, url: str, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
    ) -> RevocationResult:
        entry = self._crl(url, issuer, now)
        _check_crl_scope(entry.crl, url, cert)
        source = f"crl {url}"
        revoked = entry.crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if revoked is None:
            return RevocationResult("good", source, expires=entry.expires)
        try:
            reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reason = x509.ReasonFlags.unspecified
        if reason == x509.ReasonFlags.remove_from_crl:
            return RevocationResult("good", source, expires=entry.expires)
        return RevocationResult(
            "revoked",
            source,
            reason=_REASON_NAMES.get(reason, reason.value),
            revoked_at=revoked.revocation_date_utc,
            expires=entry.expires,
        )

    def _crl(self, url: str, issuer: x509.Certificate, now: dt.datetime) -> _CachedCRL:
        issuer_id = issuer.fingerprint(hashes.SHA256())
        with self._lock:
            entry = self._crls.get(url)
            if entry is not None and entry.expires > now:
                self._crls.move_to_end(url)
            else:
                entry = None
        if entry is None:
            body = self._fetch(url, None, CRL_TYPE)
            try:
                crl = x509.load_der_x509_crl(body)
            except ValueError:
                try:
                    crl = x509.load_pem_x509_crl(body)
                except ValueError:
                    raise _Unusable("not a CRL") from None
            expires = self._check_times(crl.last_update_utc, crl.next_update_utc, now)
            entry = _CachedCRL(crl, expires)
        if issuer_id not in entry.verified_for:
            if entry.crl.issuer != issuer.subject:
                raise _Unusable(f"the CRL is issued by {entry.crl.issuer.rfc4514_string()}")
            try:
                ok = entry.crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            except (TypeError, ValueError, UnsupportedAlgorithm):
                ok = False
            if not ok:
                raise _Unusable("the CRL signature does not verify")
            entry.verified_for.add(issuer_id)
        with self._lock:
            self._crls[url] = entry
            self._crls.move_to_end(url)
            while len(self._crls) > self._max_crls:
                self._crls.popitem(last=False)
        return entry


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, _Unusable) else f"unreachable ({text})"


def _hash_of(response: ocsp.OCSPResponse) -> hashes.HashAlgorithm | None:
    try:
        return response.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None


def _delegation_problem(
    signer: x509.Certificate, issuer: x509.Certificate, now: dt.datetime, skew: dt.timedelta
) -> str | None:
    if signer.issuer != issuer.subject:
        return "the responder certificate is not issued by the certificate's issuer"
    try:
        signer.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return "the responder certificate is not signed by the certificate's issuer"
    try:
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        eku = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return "the responder certificate lacks id-kp-OCSPSigning"
    if not signer.not_valid_before_utc - skew <= now <= signer.not_valid_after_utc + skew:
        return "the responder certificate is not valid now"
    return None


def _matching_single_response(
    response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    key_bits = _spk_bits(issuer)
    name_der = issuer.subject.public_bytes()
    for single in response.responses:
        if single.serial_number != cert.serial_number:
            continue
        algorithm = single.hash_algorithm
        if single.issuer_key_hash == _hash(algorithm, key_bits) and (
            single.issuer_name_hash == _hash(algorithm, name_der)
        ):
            return single
    raise _Unusable("the response does not answer for this certificate")


def _hash(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _spk_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents (what OCSP key hashes are over)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _der_bit_string_contents(spki)


def _der_length(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def _der_bit_string_contents(spki: bytes) -> bytes:
    # SEQUENCE { AlgorithmIdentifier SEQUENCE, BIT STRING }
    _, pos = _der_length(spki, 1)
    alg_len, alg_start = _der_length(spki, pos + 1)
    pos = alg_start + alg_len
    if spki[pos] != 0x03:
        raise _Unusable("malformed issuer public key")
    bits_len, bits_start = _der_length(spki, pos + 1)
    return spki[bits_start + 1 : bits_start + bits_len]  # skip the unused-bits octet


def _check_crl_scope(crl: x509.CertificateRevocationList, url: str, cert: x509.Certificate) -> None:
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    except x509.ExtensionNotFound:
        pass
    else:
        raise _Unusable("a delta CRL is not a complete CRL")
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return
    if idp.indirect_crl or idp.only_some_reasons or idp.only_contains_attribute_certs:
        raise _Unusable("the CRL covers only some reasons or other issuers' certificates")
    is_ca = _is_ca(cert)
    if (idp.only_contains_ca_certs and not is_ca) or (idp.only_contains_user_certs and is_ca):
        raise _Unusable("the CRL does not cover this kind of certificate")
    if idp.full_name:
        names = {n.value for n in idp.full_name if isinstance(n, x509.UniformResourceIdentifier)}
        if url not in names:
            raise _Unusable("the CRL's issuing distribution point is another URL")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


# ---- the verdict --------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateVerdict:
    """What `check_certificate` found: the chain it built and every problem."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # leaf ... root, as built (empty if none)
    revocation: RevocationState
    revocation_source: str  # "ocsp http://...", "crl http://...", ""
    problems: tuple[str, ...]  # empty when valid

    @property
    def valid(self) -> bool:
        return not self.problems


def _ee_email_eku(_policy: object, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage) -> None:
    if _EMAIL not in eku:
        raise ValueError("the end-entity certificate is not for emailProtection")


def _ca_email_eku(
    _policy: object, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    if eku is not None and _EMAIL not in eku and _ANY_EKU not in eku:
        raise ValueError("the CA certificate's extended key usage excludes emailProtection")


def _policies(*, strict: bool) -> tuple[ExtensionPolicy, ExtensionPolicy]:
    """(CA policy, EE policy): the Web PKI defaults with S/MIME's EKU rules, a SAN
    that may be absent (legacy subject emailAddress) and an AKI that may be absent."""
    ca = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _ca_email_eku
    )
    ee = (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
    )
    if strict:
        ee = ee.require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _ee_email_eku)
    else:
        ee = ee.may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    return ca, ee


def _build_chain(
    leaf: x509.Certificate,
    store: Store,
    intermediates: list[x509.Certificate],
    when: dt.datetime,
    *,
    strict: bool,
) -> tuple[tuple[x509.Certificate, ...], str]:
    ca_policy, ee_policy = _policies(strict=strict)
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(when)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        return tuple(verifier.verify(leaf, intermediates).chain), ""
    except VerificationError as exc:
        return (), str(exc).removeprefix("validation failed: ")
    except Exception as exc:  # a certificate cryptography cannot even process
        return (), str(exc) or type(exc).__name__


def _validity_problem(cert: x509.Certificate, at: dt.datetime, what: str) -> str | None:
    if at < cert.not_valid_before_utc:
        return f"{what} is not valid before {_when(cert.not_valid_before_utc)}"
    if at > cert.not_valid_after_utc:
        return f"{what} expired on {_when(cert.not_valid_after_utc)}"
    return None


def _eku_problem(cert: x509.Certificate) -> str | None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "the certificate has no extended key usage (emailProtection is required)"
    except ValueError as exc:
        return f"the certificate's extensions cannot be read: {exc}"
    if _EMAIL not in eku:
        names = ", ".join(getattr(oid, "_name", None) or oid.dotted_string for oid in eku)
        return f"the certificate is not for e-mail protection (extended key usage: {names})"
    return None


def _key_usage_problem(cert: x509.Certificate, purpose: Purpose) -> str | None:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "the certificate's public key cannot be read"
    try:
        usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None  # RFC 8550 §4.4.2: no key usage extension restricts nothing
    except ValueError as exc:
        return f"the certificate's extensions cannot be read: {exc}"
    if purpose == "sign":
        signing_keys = (
            rsa.RSAPublicKey,
            ec.EllipticCurvePublicKey,
            ed25519.Ed25519PublicKey,
            ed448.Ed448PublicKey,
        )
        if isinstance(key, signing_keys):
            if usage is None or usage.digital_signature or usage.content_commitment:
                return None
            return "the certificate's key usage does not allow signing (digitalSignature)"
        return f"the certificate's {type(key).__name__} key cannot sign"
    if isinstance(key, rsa.RSAPublicKey):
        if usage is None or usage.key_encipherment:
            return None
        return "the certificate's key usage does not allow encryption (keyEncipherment)"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if usage is None or (usage.key_agreement and not usage.decipher_only):
            return None
        return "the certificate's key usage does not allow encryption (keyAgreement)"
    return "the certificate's key cannot be used to encrypt mail"


def can_encrypt(cert: x509.Certificate) -> bool:
    """Whether the certificate's key and key usage allow encrypting mail to it."""
    return _key_usage_problem(cert, "encrypt") is None


def _normalise_address(address: str) -> str:
    local, _, domain = address.rpartition("@")
    domain = domain.rstrip(".")
    if not domain.isascii():
        with contextlib.suppress(UnicodeError):
            domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}".lower()


def _addresses(cert: x509.Certificate) -> list[str]:
    """rfc822Name SANs; the subject's emailAddress only when there is no SAN at all."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    except ValueError:
        return []
    else:
        return [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]


def _address_problem(cert: x509.Certificate, address: str) -> str | None:
    found = _addresses(cert)
    wanted = _normalise_address(address)
    if any("@" in a and _normalise_address(a) == wanted for a in found):
        return None
    if not found:
        return f"the certificate names no mail address, not {address}"
    return f"the certificate is for {', '.join(found)}, not {address}"


def _revocation_problem(result: RevocationResult, what: str) -> str:
    when = f" on {_when(result.revoked_at)}" if result.revoked_at else ""
    return f"{what} was revoked ({result.reason or 'unspecified'}){when} ({result.source})"


def _check_arguments(
    certificate: object,
    anchors: object,
    purpose: object,
    address: object,
    extra_intermediates: object,
    at: object,
    revocation: object,
    require_revocation: object,
) -> None:
    if not isinstance(certificate, x509.Certificate):
        raise InputError("check_certificate() takes an x509.Certificate")
    if not isinstance(anchors, TrustAnchors):
        raise InputError("anchors must be TrustAnchors")
    if purpose not in ("sign", "encrypt"):
        raise InputError(f"purpose must be 'sign' or 'encrypt', not {purpose!r}")
    if address is not None:
        if not isinstance(address, str):
            raise InputError("address must be a string")
        local, at_sign, domain = address.rpartition("@")
        if not at_sign or not local or not domain or any(c.isspace() for c in address):
            raise InputError(f"not a mail address: {address!r}")
    if (
        isinstance(extra_intermediates, str | bytes)
        or not isinstance(extra_intermediates, Sequence)
        or not all(isinstance(c, x509.Certificate) for c in extra_intermediates)
    ):
        raise InputError("extra_intermediates must be a sequence of certificates")
    if at is not None and (not isinstance(at, dt.datetime) or at.tzinfo is None):
        raise InputError("`at` must be a timezone-aware datetime")
    if revocation is not None and not isinstance(revocation, RevocationChecker):
        raise InputError("revocation must be a RevocationChecker")
    if require_revocation and revocation is None:
        raise InputError("require_revocation needs a RevocationChecker")


def check_certificate(
    certificate: x509.Certificate,
    anchors: TrustAnchors,
    *,
    purpose: Purpose,
    address: str | None,
    extra_intermediates: Sequence[x509.Certificate] = (),
    at: dt.datetime | None = None,
    revocation: RevocationChecker | None = None,
    require_revocation: bool = False,
) -> CertificateVerdict:
    """Whether `certificate` can be trusted to `purpose` ("sign": verify its
    signatures; "encrypt": encrypt to it) for mail of `address`, at `at` (now).

    `extra_intermediates` are untrusted helpers for building the chain (e.g. the
    certificates a signed message carried). A revocation status of "unknown" is a
    problem only with `require_revocation`. Never raises for a bad certificate.
    """
    _check_arguments(
        certificate,
        anchors,
        purpose,
        address,
        extra_intermediates,
        at,
        revocation,
        require_revocation,
    )
    when = _utc(at) if at is not None else _now()
    problems: list[str] = []

    # 1. The end entity's own fields.
    leaf_problems = [
        p
        for p in (
            _validity_problem(certificate, when, "the certificate"),
            _eku_problem(certificate),
            _key_usage_problem(certificate, purpose),
            _address_problem(certificate, address) if address is not None else None,
        )
        if p
    ]
    problems += leaf_problems

    # 2. The chain, strictly at `when`; if that fails, again with the end entity's own
    #    checks relaxed (they are reported above) to tell "no chain" from "bad leaf".
    store = Store(list(anchors.roots))
    helpers = [*anchors.intermediates, *extra_intermediates]
    chain, error = _build_chain(certificate, store, helpers, when, strict=True)
    if not chain:
        # At `when` moved into the leaf's validity, else when the leaf was issued
        # (its CA was valid then), so that an expired CA shows as such below.
        lenient = min(max(when, certificate.not_valid_before_utc), certificate.not_valid_after_utc)
        for moment in (lenient, certificate.not_valid_before_utc):
            chain, relaxed_error = _build_chain(certificate, store, helpers, moment, strict=False)
            if chain:
                break
        if not chain:
            problems.append(f"{NO_CHAIN}: {relaxed_error}")
        else:
            ca_problems = [
                p
                for ca in chain[1:]
                if (p := _validity_problem(ca, when, f"the CA certificate {_subject(ca)}"))
            ]
            problems += ca_problems
            if not leaf_problems and not ca_problems:
                problems.append(f"{NO_CHAIN}: {error}")

    # 3. Revocation of the end entity, then of each intermediate CA (not the root).
    state: RevocationState = "not-checked"
    source = ""
    if revocation is not None and len(chain) >= 2:
        states: list[str] = []
        for index, cert in enumerate(chain[:-1]):
            what = "the certificate" if index == 0 else f"the CA certificate {_subject(cert)}"
            result = revocation.check(cert, chain[index + 1], at=when)
            states.append(result.status)
            if index == 0:
                source = result.source
            if result.status == "revoked":
                problems.append(_revocation_problem(result, what))
            elif result.status == "unknown" and require_revocation:
                problems.append(f"the revocation status of {what} is unknown: {result.detail}")
        state = "revoked" if "revoked" in states else "unknown" if "unknown" in states else "good"
    elif require_revocation:
        problems.append("the revocation status cannot be checked without a chain")

    return CertificateVerdict(certificate, chain, state, source, tuple(problems))
