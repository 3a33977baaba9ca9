"""OCSP responder logic (RFC 6960, with the RFC 5019 profile for caching).

One responder serves one issuing CA through a delegated responder certificate
(or the CA certificate itself). It knows nothing about storage: ``lookup`` maps a
serial to a status. ``respond()`` takes the DER request and always returns a DER
OCSPResponse: malformed input yields an unsigned malformedRequest, never an
exception.

Choices, with the reason for each:

- A request for an issuer we do not serve gets an unsigned ``unauthorized``
  (RFC 5019 §2.2.3, and what Let's Encrypt's responder does). RFC 6960 §2.2 would
  allow a signed "unknown", but our responder certificate is not issued by that CA,
  so no client could verify it anyway, and signing for arbitrary CertIDs would be a
  free signing oracle for anyone on the network.
- A request listing more than one certificate gets ``malformedRequest``:
  RFC 6960 §4.2.1 expects one SingleResponse per requested certificate, so
  answering only the first would be wrong, and OpenSSL, NSS and browsers send one
  certificate per request. (cryptography also refuses to parse such requests.)
- Nonces (RFC 8954): echoed when present; one of 0 or more than 32 octets is
  rejected with ``malformedRequest`` as §2.1 requires. Responses with a nonce are
  unique and never cached.
- Responses without a nonce are cached per (serial, CertID hash) for
  ``cache_ttl`` (default min(validity, 60 s)) in a bounded LRU, so repeated GETs
  cost no signature. ``invalidate(serial)`` must be called on revocation; a cached
  answer is never served beyond its window even if the caller forgets.
- A lookup that raises yields ``tryLater`` (the store is down, the status may
  exist); any other unexpected failure yields ``internalError``.
- Pre-signed answers (RFC 5019): ``presign(serial, status)`` signs the nonce-less
  answer for a SHA-1 CertID ahead of time, and ``load_presigned`` puts it in a map
  keyed by the CertID's DER. A plain request (one SHA-1 CertID, no extensions, no
  signature) is recognised by ``plain_cert_id`` without a full parse and answered from
  that map: no signing, no database. The caller that keeps the map in step with the
  store (ca/presigned.py) calls ``mark_synced()`` after each pass; when no pass has
  succeeded for ``max_staleness`` (60 s) the map is not used, so another server's
  revocation is never hidden for longer than that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from mailpki.ca.crl import PrivateKey, default_hash
from mailpki.errors import CAError

__all__ = [
    "INTERNAL_ERROR_RESPONSE",
    "MALFORMED_RESPONSE",
    "TRY_LATER_RESPONSE",
    "UNAUTHORIZED_RESPONSE",
    "CertStatus",
    "OCSPResponder",
    "PresignedAnswer",
    "StatusLookup",
    "plain_cert_id",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CertStatus:
    """What the CA knows about one serial it issued."""

    status: Literal["good", "revoked"]
    revoked_at: dt.datetime | None = None  # naive = UTC
    reason: x509.ReasonFlags | None = None

    def __post_init__(self) -> None:
        if self.status == "revoked" and self.revoked_at is None:
            raise ValueError("a revoked CertStatus needs revoked_at")


StatusLookup = Callable[[int], CertStatus | None]  # serial -> status; None = never issued


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


# Unsigned error responses are constants (5 bytes each): build them once.
MALFORMED_RESPONSE = _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
INTERNAL_ERROR_RESPONSE = _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
TRY_LATER_RESPONSE = _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
UNAUTHORIZED_RESPONSE = _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)

# CertID hash algorithms cryptography can echo back (it parses no others).
_HASHES: dict[str, tuple[Callable[[bytes], bytes], hashes.HashAlgorithm]] = {
    # SHA-1 CertIDs are what most clients (OpenSSL included) send; not a signature.
    "sha1": (lambda b: hashlib.sha1(b, usedforsecurity=False).digest(), hashes.SHA1()),  # noqa: S303
    "sha224": (lambda b: hashlib.sha224(b).digest(), hashes.SHA224()),
    "sha256": (lambda b: hashlib.sha256(b).digest(), hashes.SHA256()),
    "sha384": (lambda b: hashlib.sha384(b).digest(), hashes.SHA384()),
    "sha512": (lambda b: hashlib.sha512(b).digest(), hashes.SHA512()),
}

_MAX_NONCE = 32  # RFC 8954 §2.1
_DEFAULT_CACHE_TTL = dt.timedelta(seconds=60)
MAX_STALENESS = 60.0  # seconds a pre-signed map may go without a sync before it is not used
# AlgorithmIdentifier of SHA-1 in a CertID, with and without the NULL parameters.
_SHA1_ALG_NULL = bytes.fromhex("300906052b0e03021a0500")
_SHA1_ALG_BARE = bytes.fromhex("300706052b0e03021a")


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _element(data: bytes, offset: int, limit: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at offset; ValueError past ``limit``."""
    if offset + 2 > limit:
        raise ValueError("truncated")
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > limit:
            raise ValueError("bad length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    else:
        length = first
    end = start + length
    if end > limit:
        raise ValueError("truncated")
    return tag, start, end


def plain_cert_id(request_der: bytes) -> bytes | None:
    """The CertID DER of a plain OCSPRequest (RFC 5019: one certificate, no requestor
    name, no extensions, no signature), read without a full parse; None otherwise.

    None only means "not plain": the full parser then decides (and answers
    malformedRequest when it is not an OCSPRequest at all).
    """
    try:
        size = len(request_der)
        tag, start, end = _element(request_der, 0, size)
        if tag != 0x30 or end != size:
            return None
        tag, tbs_start, tbs_end = _element(request_der, start, end)  # TBSRequest
        if tag != 0x30 or tbs_end != end:
            return None  # an optionalSignature follows
        tag, list_start, list_end = _element(request_der, tbs_start, tbs_end)
        if tag == 0xA0:  # version: only v1 (0) is plain
            if request_der[list_start:list_end] != b"\x02\x01\x00":
                return None
            tag, list_start, list_end = _element(request_der, list_end, tbs_end)
        if tag != 0x30 or list_end != tbs_end:
            return None  # requestorName, or requestExtensions (a nonce) follow
        tag, req_start, req_end = _element(request_der, list_start, list_end)  # Request
        if tag != 0x30 or req_end != list_end:
            return None  # more than one Request
        tag, _, id_end = _element(request_der, req_start, req_end)  # CertID
        if tag != 0x30 or id_end != req_end:
            return None  # singleRequestExtensions
        return request_der[req_start:id_end]
    except (ValueError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class PresignedAnswer:
    """One pre-signed, nonce-less OCSP response (SHA-1 CertID) and its validity."""

    serial: int
    status: Literal["good", "revoked", "unknown"]
    this_update: dt.datetime
    next_update: dt.datetime
    der: bytes


def issuer_hashes(issuer: x509.Certificate) -> dict[str, tuple[bytes, bytes]]:
    """(issuerNameHash, issuerKeyHash) of ``issuer`` for each CertID algorithm.

    Hashed over the exact bytes in the certificate (RFC 6960 §4.1.1): the subject
    Name's DER and the subjectPublicKey BIT STRING's value, read with asn1crypto
    so that no re-encoding can change them.
    """
    cert = asn1_x509.Certificate.load(issuer.public_bytes(serialization.Encoding.DER))
    tbs = cert["tbs_certificate"]
    name_der: bytes = tbs["subject"].dump()
    key_bits: bytes = tbs["subject_public_key_info"]["public_key"].contents[1:]  # skip unused-bits
    return {alg: (h(name_der), h(key_bits)) for alg, (h, _) in _HASHES.items()}


def _check_responder(
    issuer: x509.Certificate, responder_cert: x509.Certificate, responder_key: PrivateKey
) -> None:
    if (
        isinstance(responder_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        and responder_key.public_key() != responder_cert.public_key()
    ):
        raise CAError("the OCSP responder key does not belong to the responder certificate")
    if responder_cert == issuer:
        return  # the CA answers for itself
    try:
        responder_cert.verify_directly_issued_by(issuer)
    except Exception as exc:  # ValueError, TypeError, InvalidSignature
        raise CAError(
            "the OCSP responder certificate must be issued directly by the CA it answers "
            f"for (RFC 6960 §4.2.2.2): {exc}"
        ) from exc
    try:
        eku = responder_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise CAError("the OCSP responder certificate lacks the OCSPSigning extended key usage")


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class OCSPResponder:
    """Answers OCSP requests about certificates of one issuing CA."""

    def __init__(
        self,
        *,
        issuer: x509.Certificate,
        responder_cert: x509.Certificate,
        responder_key: PrivateKey,
        lookup: StatusLookup,
        validity: dt.timedelta = dt.timedelta(hours=24),
        clock: Callable[[], dt.datetime] | None = None,
        cache_ttl: dt.timedelta | None = None,
        cache_size: int = 10_000,
    ) -> None:
        if validity <= dt.timedelta(0):
            raise CAError("OCSP response validity must be positive")
        _check_responder(issuer, responder_cert, responder_key)
        self._issuer_hashes = issuer_hashes(issuer)
        self._responder_cert = responder_cert
        self._responder_key = responder_key
        self._sign_alg = default_hash(responder_key)
        self._lookup = lookup
        self._validity = validity
        self._clock: Callable[[], dt.datetime] = clock or (lambda: dt.datetime.now(dt.UTC))
        ttl = min(validity, _DEFAULT_CACHE_TTL) if cache_ttl is None else cache_ttl
        self._cache_ttl = min(ttl, validity)  # never cache past the response's own nextUpdate
        self._cache_size = max(0, cache_size)
        self._cache: OrderedDict[tuple[int, str], tuple[dt.datetime, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        # Bumped by every invalidation: a response computed before a revocation
        # must not be stored after invalidate() has run (lookup/insert race).
        self._generation = 0
        # Pre-signed answers by CertID DER -> (der, next_update as a POSIX time).
        self._presigned: dict[bytes, tuple[bytes, float]] = {}
        # What the pre-signed answers say, by serial: a nonce'd request signs fresh
        # but needs no database while the map is in step (same staleness bound).
        self._known: dict[int, CertStatus] = {}
        self._fast = _FastSigner.build(self)
        self._synced_at = float("-inf")  # time.monotonic() of the last successful sync
        self._max_staleness = MAX_STALENESS
        self._wall: Callable[[], float] = (
            time.time if clock is None else (lambda: _utc(self._clock()).timestamp())
        )

    @property
    def validity(self) -> dt.timedelta:
        """How long a response is valid (nextUpdate - thisUpdate)."""
        return self._validity

    # -- pre-signed answers ----------------------------------------------------------------

    def cert_id(self, serial: int, *, null_params: bool = True) -> bytes:
        """The DER CertID (SHA-1, RFC 5019 §2.1.1) a client sends for ``serial``."""
        name_hash, key_hash = self._issuer_hashes["sha1"]
        serial_der = serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=False)
        body = (
            (_SHA1_ALG_NULL if null_params else _SHA1_ALG_BARE)
            + b"\x04\x14"
            + name_hash
            + b"\x04\x14"
            + key_hash
            + b"\x02"
            + _der_len(len(serial_der))
            + serial_der
        )
        return b"\x30" + _der_len(len(body)) + body

    def request_der(self, serial: int) -> bytes:
        """The plain RFC 5019 OCSPRequest (DER) for ``serial``; its base64 is the GET path."""
        cert_id = self.cert_id(serial)
        request = b"\x30" + _der_len(len(cert_id)) + cert_id
        request_list = b"\x30" + _der_len(len(request)) + request
        tbs = b"\x30" + _der_len(len(request_list)) + request_list
        return b"\x30" + _der_len(len(tbs)) + tbs

    def presign(self, serial: int, status: CertStatus | None) -> PresignedAnswer:
        """Sign the nonce-less answer for ``serial`` now (thisUpdate = now)."""
        now = _utc(self._clock()).replace(microsecond=0)
        name_hash, key_hash = self._issuer_hashes["sha1"]
        der = self._sign("sha1", name_hash, key_hash, serial, status, None, now)
        state: Literal["good", "revoked", "unknown"] = (
            "unknown" if status is None else "revoked" if status.status == "revoked" else "good"
        )
        return PresignedAnswer(serial, state, now, now + self._validity, der)

    def load_presigned(self, answers: list[PresignedAnswer]) -> None:
        """Serve these answers from memory (replacing older ones for the same serials)."""
        fresh = {}
        known: dict[int, CertStatus] = {}
        for answer in answers:
            entry = (answer.der, answer.next_update.timestamp())
            fresh[self.cert_id(answer.serial)] = entry
            fresh[self.cert_id(answer.serial, null_params=False)] = entry
            if answer.status == "good":
                known[answer.serial] = _GOOD
            elif answer.status == "revoked":
                single = ocsp.load_der_ocsp_response(answer.der)
                known[answer.serial] = CertStatus(
                    "revoked",
                    revoked_at=single.revocation_time_utc,
                    reason=single.revocation_reason or x509.ReasonFlags.unspecified,
                )
        with self._lock:
            self._presigned.update(fresh)
            self._known.update(known)

    def drop_presigned(self, serials: list[int]) -> None:
        """Stop serving pre-signed answers for these serials (until loaded again)."""
        with self._lock:
            for serial in serials:
                self._presigned.pop(self.cert_id(serial), None)
                self._presigned.pop(self.cert_id(serial, null_params=False), None)
                self._known.pop(serial, None)

    def mark_synced(self, at: float) -> None:
        """The map reflects the store as of ``at`` (a time.monotonic() reading)."""
        self._synced_at = max(self._synced_at, at)

    @property
    def presigned_count(self) -> int:
        return len(self._presigned) // 2

    def _in_step(self) -> bool:
        return time.monotonic() - self._synced_at <= self._max_staleness

    def _from_presigned(self, request_der: bytes) -> bytes | None:
        if not self._in_step():
            return None  # the sync stalled: answer from the store instead
        key = plain_cert_id(request_der)
        if key is None:
            return None
        hit = self._presigned.get(key)
        if hit is None or self._wall() >= hit[1]:
            return None
        return hit[0]

    @property
    def cache_ttl(self) -> dt.timedelta:
        """How long a nonce-less response is reused; also a sane HTTP max-age."""
        return self._cache_ttl

    def invalidate(self, serial: int) -> None:
        """Forget cached and pre-signed responses for ``serial``; call it after revoking it."""
        with self._lock:
            self._generation += 1
            for alg in _HASHES:
                self._cache.pop((serial, alg), None)
            self._presigned.pop(self.cert_id(serial), None)
            self._presigned.pop(self.cert_id(serial, null_params=False), None)
            self._known.pop(serial, None)

    def clear(self) -> None:
        """Forget every cached response (for bulk revocation)."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def respond(self, request_der: bytes) -> bytes:
        """Answer one DER OCSPRequest with a DER OCSPResponse; never raises."""
        try:
            presigned = self._from_presigned(request_der)
            if presigned is not None:
                return presigned
            return self._respond(request_der)
        except Exception:
            log.exception("OCSP responder failed")
            return INTERNAL_ERROR_RESPONSE

    def _respond(self, request_der: bytes) -> bytes:
        # 1. Parse. Any failure here is the client's fault: malformedRequest.
        try:
            req = ocsp.load_der_ocsp_request(request_der)
            alg_name = req.hash_algorithm.name
            name_hash, key_hash, serial = (
                req.issuer_name_hash,
                req.issuer_key_hash,
                req.serial_number,
            )
            nonce = self._nonce(req)
        except Exception:
            # ValueError: bad DER; NotImplementedError: more than one certificate;
            # UnsupportedAlgorithm: CertID hash; _BadNonce. All are the client's doing.
            return MALFORMED_RESPONSE

        # 2. Is it our CA? Compare both hashes for the CertID's own algorithm.
        ours = self._issuer_hashes.get(alg_name)
        if ours is None or ours != (name_hash, key_hash):
            return UNAUTHORIZED_RESPONSE

        now = _utc(self._clock())

        # 3. Cached answer (nonce-less only), valid for [produced, produced + ttl).
        cache_key = (serial, alg_name)
        generation = -1
        if nonce is None and self._cache_size:
            with self._lock:
                hit = self._cache.get(cache_key)
                if hit is not None:
                    produced, der = hit
                    if produced <= now < produced + self._cache_ttl:
                        self._cache.move_to_end(cache_key)
                        return der
                    del self._cache[cache_key]
                generation = self._generation

        # 4. Status: what the pre-signed answers say while they are in step with the
        # store, else from the store; a failing store means "try later", not "unknown".
        try:
            status = self._known.get(serial) if self._in_step() else None
            if status is None:
                status = self._lookup(serial)
        except Exception:
            log.exception("OCSP status lookup failed for serial %#x", serial)
            return TRY_LATER_RESPONSE

        # 5. Sign.
        der = self._sign(alg_name, name_hash, key_hash, serial, status, nonce, now)

        if nonce is None and self._cache_size:
            with self._lock:
                if generation == self._generation:
                    self._cache[cache_key] = (now, der)
                    self._cache.move_to_end(cache_key)
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return der

    @staticmethod
    def _nonce(req: ocsp.OCSPRequest) -> bytes | None:
        try:
            ext = req.extensions.get_extension_for_class(x509.OCSPNonce)
        except x509.ExtensionNotFound:
            return None
        nonce = ext.value.nonce
        if not 1 <= len(nonce) <= _MAX_NONCE:
            raise _BadNonce
        return nonce

    def _sign(
        self,
        alg_name: str,
        name_hash: bytes,
        key_hash: bytes,
        serial: int,
        status: CertStatus | None,
        nonce: bytes | None,
        now: dt.datetime,
    ) -> bytes:
        if self._fast is not None:
            return self._fast.sign(alg_name, name_hash, key_hash, serial, status, nonce, now)
        revoked_at: dt.datetime | None = None
        reason: x509.ReasonFlags | None = None
        if status is None:
            cert_status = ocsp.OCSPCertStatus.UNKNOWN
        elif status.status == "revoked":
            cert_status = ocsp.OCSPCertStatus.REVOKED
            assert status.revoked_at is not None  # guaranteed by CertStatus.__post_init__
            revoked_at = _utc(status.revoked_at)
            # Same convention as the CRL: "unspecified" is said by omitting the reason.
            if status.reason is not x509.ReasonFlags.unspecified:
                reason = status.reason
        else:
            cert_status = ocsp.OCSPCertStatus.GOOD
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash,
                issuer_key_hash=key_hash,
                serial_number=serial,
                algorithm=_HASHES[alg_name][1],
                cert_status=cert_status,
                this_update=now,
                next_update=now + self._validity,
                revocation_time=revoked_at,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self._responder_cert)
            .certificates([self._responder_cert])
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        return builder.sign(self._responder_key, self._sign_alg).public_bytes(
            serialization.Encoding.DER
        )


_GOOD = CertStatus("good")
_HASH_OIDS = {  # AlgorithmIdentifier DER (with NULL parameters, as cryptography writes)
    "sha1": _SHA1_ALG_NULL,
    "sha224": bytes.fromhex("300d06096086480165030402040500"),
    "sha256": bytes.fromhex("300d06096086480165030402010500"),
    "sha384": bytes.fromhex("300d06096086480165030402020500"),
    "sha512": bytes.fromhex("300d06096086480165030402030500"),
}
_REASON_CODES = {
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
    x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.remove_from_crl: 8,
    x509.ReasonFlags.privilege_withdrawn: 9,
    x509.ReasonFlags.aa_compromise: 10,
}
_NONCE_OID = bytes.fromhex("06092b0601050507300102")
_BASIC_OID = bytes.fromhex("06092b0601050507300101")


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    if size < 0x100:
        return bytes((tag, 0x81, size)) + content
    return bytes((tag,)) + _der_len(size) + content


def _gtime(moment: dt.datetime) -> bytes:
    return b"\x18\x0f" + moment.strftime("%Y%m%d%H%M%SZ").encode()


class _FastSigner:
    """Signs a BasicOCSPResponse from precomputed parts: the responderID, signature
    algorithm and certificates come from one response cryptography signed at start-up;
    per request only the SingleResponse, the times and the nonce are encoded and one
    signature is made. Unit tests check its answers against cryptography's."""

    def __init__(
        self,
        responder_id: bytes,
        signature_algorithm: bytes,
        certs: bytes,
        sign: Callable[[bytes], bytes],
        validity: dt.timedelta,
    ) -> None:
        self._responder_id = responder_id
        self._signature_algorithm = signature_algorithm
        self._certs = certs
        self._sign_tbs = sign
        self._validity = validity
        # Per request only the serial, the nonce and the second change: the CertID's
        # start (hash algorithm and issuer hashes) and the encoded times of the current
        # second are kept (a second's worth: one entry, replaced when the second moves).
        self._cert_id_starts: dict[tuple[str, bytes, bytes], bytes] = {}
        self._times: tuple[int, bytes, bytes] = (-1, b"", b"")

    @classmethod
    def build(cls, responder: OCSPResponder) -> _FastSigner | None:
        key = responder._responder_key
        alg = responder._sign_alg
        sign: Callable[[bytes], bytes]
        if isinstance(key, ec.EllipticCurvePrivateKey) and alg is not None:
            ecdsa = ec.ECDSA(alg)
            sign = lambda tbs: key.sign(tbs, ecdsa)  # noqa: E731
        elif isinstance(key, rsa.RSAPrivateKey) and alg is not None:
            pkcs1 = padding.PKCS1v15()
            sign = lambda tbs: key.sign(tbs, pkcs1, alg)  # noqa: E731
        else:
            return None  # other keys: cryptography's builder signs each answer
        name_hash, key_hash = responder._issuer_hashes["sha1"]
        now = dt.datetime.now(dt.UTC)
        template = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=1,
            algorithm=hashes.SHA1(),  # noqa: S303 (a CertID, not a signature)
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + responder._validity,
            revocation_time=None,
            revocation_reason=None,
        )
        der = (
            template.responder_id(ocsp.OCSPResponderEncoding.HASH, responder._responder_cert)
            .certificates([responder._responder_cert])
            .sign(key, alg)
            .public_bytes(serialization.Encoding.DER)
        )
        # OCSPResponse { status, [0] { SEQUENCE { OID, OCTET STRING { BasicOCSPResponse } } } }
        size = len(der)
        _, body, _ = _element(der, 0, size)
        _, _, status_end = _element(der, body, size)
        _, bytes_start, bytes_end = _element(der, status_end, size)  # [0]
        _, seq_start, seq_end = _element(der, bytes_start, bytes_end)
        _, _, oid_end = _element(der, seq_start, seq_end)
        _, basic_start, basic_end = _element(der, oid_end, seq_end)  # OCTET STRING
        _, inner_start, inner_end = _element(der, basic_start, basic_end)  # BasicOCSPResponse
        _, tbs_start, tbs_end = _element(der, inner_start, inner_end)
        _, _, rid_end = _element(der, tbs_start, tbs_end)  # responderID (no version)
        responder_id = der[tbs_start:rid_end]
        _, _, alg_end = _element(der, tbs_end, inner_end)
        signature_algorithm = der[tbs_end:alg_end]
        _, _, sig_end = _element(der, alg_end, inner_end)
        certs = der[sig_end:inner_end]
        return cls(responder_id, signature_algorithm, certs, sign, responder._validity)

    def sign(
        self,
        alg_name: str,
        name_hash: bytes,
        key_hash: bytes,
        serial: int,
        status: CertStatus | None,
        nonce: bytes | None,
        now: dt.datetime,
    ) -> bytes:
        start = self._cert_id_starts.get((alg_name, name_hash, key_hash))
        if start is None:
            start = _HASH_OIDS[alg_name] + _tlv(0x04, name_hash) + _tlv(0x04, key_hash)
            if len(self._cert_id_starts) < 64:  # only this CA's hashes pass the check
                self._cert_id_starts[(alg_name, name_hash, key_hash)] = start
        serial_der = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
        cert_id = _tlv(0x30, start + _tlv(0x02, serial_der))
        if status is None:
            cert_status = b"\x82\x00"
        elif status.status == "revoked":
            assert status.revoked_at is not None
            info = _gtime(_utc(status.revoked_at))
            code = _REASON_CODES.get(status.reason) if status.reason is not None else None
            if code is not None:  # "unspecified" is said by leaving the reason out
                info += b"\xa0\x03\x0a\x01" + bytes((code,))
            cert_status = _tlv(0xA1, info)
        else:
            cert_status = b"\x80\x00"
        produced, next_update = self._encoded_times(now)
        single = _tlv(0x30, cert_id + cert_status + produced + next_update)
        tbs_body = self._responder_id + produced + _tlv(0x30, single)
        if nonce is not None:
            extension = _NONCE_OID + _tlv(0x04, _tlv(0x04, nonce))
            tbs_body += _tlv(0xA1, _tlv(0x30, _tlv(0x30, extension)))
        tbs = _tlv(0x30, tbs_body)
        signature = self._sign_tbs(tbs)
        basic = _tlv(
            0x30, tbs + self._signature_algorithm + _tlv(0x03, b"\x00" + signature) + self._certs
        )
        return _tlv(0x30, b"\x0a\x01\x00" + _tlv(0xA0, _tlv(0x30, _BASIC_OID + _tlv(0x04, basic))))

    def _encoded_times(self, now: dt.datetime) -> tuple[bytes, bytes]:
        """thisUpdate (= producedAt) and the [0] nextUpdate of `now`, to the second."""
        second = int(now.timestamp())
        cached_second, produced, next_update = self._times
        if second != cached_second:
            moment = now.replace(microsecond=0)
            produced = _gtime(moment)
            next_update = _tlv(0xA0, _gtime(moment + self._validity))
            self._times = (second, produced, next_update)
        return produced, next_update


class _BadNonce(Exception):
    """The request's nonce is empty or longer than RFC 8954 allows."""
