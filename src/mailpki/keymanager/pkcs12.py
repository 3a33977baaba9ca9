"""PKCS#12 files: how a centrally generated key and its certificate reach a person.

Two flavours. The modern one (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC, HMAC-SHA256
MAC) is what current mail clients and OpenSSL 3 read. The legacy one (PBES1
SHA-1/3-key 3DES, HMAC-SHA1 MAC) exists because gpgsm 2.2 and old Outlook import
nothing else; it is only safe because the password comes from `generate_password`
(about 116 random bits), which makes the weak KDF irrelevant.

Reading is for files a person hands us (their password, their file): every failure
is a one-line `PKCS12Error`, never a bare ValueError from the parser.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from mailpki.errors import MailPKIError, PKCS12Error
from mailpki.keymanager._pkcs12_order import gpgsm_derives_the_same_keys, issuer_first

PKCS12_MAX_SIZE = 1024 * 1024

# PBKDF2-HMAC-SHA256 rounds for the modern file's key and certificate bags (the
# OWASP 2023 figure, as for CA keys at rest): ~130 ms to build and as much to open
# on a 2024 x86 server. cryptography 50 writes the MAC with a fixed 2,048 rounds
# whatever kdf_rounds says (pyca/cryptography#9644), so against a weak password the
# MAC, not the bags, sets an attacker's cost; the generated password makes it moot.
PKCS12_KDF_ROUNDS = 600_000
# The figure Windows, old Outlook and OpenSSL use for PBES1 files; more buys nothing
# with a generated password and some old importers are slow or picky with more.
PKCS12_LEGACY_KDF_ROUNDS = 2048
GENERATED_PASSWORD_KDF_ROUNDS = 10_000
# A file states its own iteration counts: without a bound a 1 KB upload could ask
# for 2^31 rounds and burn minutes of CPU. Above the 1.4M OWASP gives for
# PBKDF2-HMAC-SHA1, so files from careful tools still open.
PKCS12_MAX_KDF_ROUNDS = 2_000_000
# A salt gpgsm mishandles comes about 3 times in 100: 20 builds in a row are ~1e-30.
_LEGACY_ATTEMPTS = 20

# No 0/O/o, 1/l/I: the password is read aloud or typed from paper.
READABLE_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
_GROUPS = 4
_GROUP_SIZE = 5  # 20 symbols of 56: log2(56) * 20 = 116.1 bits

PKCS12Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_BAD_FILE = "wrong PKCS#12 password, or not a PKCS#12 file"


@dataclass(frozen=True)
class LoadedPKCS12:
    """What a PKCS#12 file held: the key, its certificate, the other certificates."""

    key: PKCS12Key
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    friendly_name: str | None


def generate_password() -> str:
    """A fresh PKCS#12 password, e.g. 'k7Qm2-Xp4vd-9RtbH-eW3nz' (about 116 bits)."""
    groups = (
        "".join(secrets.choice(READABLE_ALPHABET) for _ in range(_GROUP_SIZE))
        for _ in range(_GROUPS)
    )
    return "-".join(groups)


def _spki(public_key: object) -> bytes:
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise TypeError("not an RSA or EC public key")
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _matches(key: PKCS12Key, certificate: x509.Certificate) -> bool:
    try:
        return _spki(key.public_key()) == _spki(certificate.public_key())
    except (TypeError, ValueError, UnsupportedAlgorithm):  # a key of a kind we cannot compare
        return False


def build_pkcs12(
    key: PKCS12Key,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    password: bytes,
    *,
    friendly_name: str,
    legacy: bool = False,
    generated_password: bool = False,
) -> bytes:
    """DER PKCS#12 with `key`, `certificate` and `chain` (issuing CA first, root last).

    `generated_password=True` (a `generate_password()` of ~116 bits) uses fewer PBKDF2
    rounds: against that much entropy the rounds add nothing, and they would cost
    ~130 ms per file in bulk enrollment. A person's own password gets the full count.

    `legacy=True` writes PBES1 3DES + HMAC-SHA1 for gpgsm 2.2 and old Outlook, its
    certificates root first so that gpgsm imports it without complaint. gpgsm 2.2.40
    imports that only for RSA keys (it crashes on a P-256 key) and refuses the modern
    (PBES2) file outright.
    gpgsm 2.2 also derives a wrong 3DES key from about 3 salts in 100 (see
    `_pkcs12_order._gpgsm_agrees`); a legacy file with such a salt is made again.
    """
    if not password:
        raise MailPKIError("refusing to build a PKCS#12 file with an empty password")
    if not friendly_name:
        raise MailPKIError("a PKCS#12 file needs a friendly name (clients show it)")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise MailPKIError("only RSA and EC keys can be packed into a PKCS#12 file")
    if not _matches(key, certificate):
        raise MailPKIError("the private key does not match the certificate")
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if legacy:
        builder = (
            builder.kdf_rounds(PKCS12_LEGACY_KDF_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the only MAC these clients check
        )
    else:
        builder = (
            builder.kdf_rounds(
                GENERATED_PASSWORD_KDF_ROUNDS if generated_password else PKCS12_KDF_ROUNDS
            )
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
        )
    for _ in range(_LEGACY_ATTEMPTS if legacy else 1):
        data = pkcs12.serialize_key_and_certificates(
            friendly_name.encode("utf-8"),
            key,
            certificate,
            list(chain),
            builder.build(bytes(password)),
        )
        if not legacy:
            return data
        if chain:
            # gpgsm checks each certificate's issuer as it imports it: root first.
            data = issuer_first(data, bytes(password))
        # gpgsm 2.2 derives a wrong 3DES key from about 3 salts in 100: such a file is
        # made again, with fresh salts (each build draws its own).
        if gpgsm_derives_the_same_keys(data, bytes(password)):
            return data
    raise MailPKIError("could not make a legacy PKCS#12 file that gpgsm can open")


def package(
    key: PKCS12Key,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    password: bytes | None,
    *,
    friendly_name: str,
    legacy: bool = False,
) -> tuple[bytes, str | None]:
    """(PKCS#12, the generated password or None): with no `password` one is generated,
    to be shown once and never stored."""
    generated = generate_password() if password is None else None
    data = build_pkcs12(
        key,
        certificate,
        chain,
        generated.encode() if generated is not None else password or b"",
        friendly_name=friendly_name,
        legacy=legacy,
        generated_password=generated is not None,
    )
    return data, generated


def load_pkcs12(data: bytes, password: bytes) -> LoadedPKCS12:
    """Open a PKCS#12 file a person gave us; PKCS12Error (one line) if it is unusable."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PKCS12Error("a PKCS#12 file must be given as bytes")
    data = bytes(data)
    if len(data) > PKCS12_MAX_SIZE:
        raise PKCS12Error(
            f"the PKCS#12 file is {len(data)} bytes; at most {PKCS12_MAX_SIZE} are accepted"
        )
    if not password:
        raise PKCS12Error("give the password of the PKCS#12 file")
    data = _definite_lengths(data)
    _check_kdf_rounds(data)
    try:
        loaded = pkcs12.load_pkcs12(data, bytes(password))
    except ValueError as exc:  # cryptography says the same for both causes
        raise PKCS12Error(_BAD_FILE) from exc
    except Exception as exc:  # the Rust parser raises other types on odd input
        raise PKCS12Error(f"cannot read the PKCS#12 file: {type(exc).__name__}") from exc

    key = loaded.key
    if key is None:
        raise PKCS12Error("the PKCS#12 file holds no private key")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PKCS12Error(
            f"the PKCS#12 file holds a {type(key).__name__}: only RSA and EC keys are accepted"
        )
    others = [c.certificate for c in loaded.additional_certs]
    entry = loaded.cert
    if entry is None:
        # Without localKeyId attributes the parser cannot tell which certificate
        # belongs to the key: take the one whose public key matches, if any.
        found = next((c for c in loaded.additional_certs if _matches(key, c.certificate)), None)
        if found is None:
            raise PKCS12Error("the PKCS#12 file holds no certificate for its private key")
        entry = found
        others = [c.certificate for c in loaded.additional_certs if c is not found]
    certificate = entry.certificate
    # OpenSSL's parser already keeps a non-matching certificate out of `cert` (it
    # lands among the others, so the error above): this guards a future parser.
    if not _matches(key, certificate):
        raise PKCS12Error("the private key in the PKCS#12 file does not match its certificate")
    name = entry.friendly_name
    return LoadedPKCS12(
        key=key,
        certificate=certificate,
        chain=_issuer_after_subject(certificate, others),
        friendly_name=name.decode("utf-8", errors="replace") if name is not None else None,
    )


def _issuer_after_subject(
    certificate: x509.Certificate, others: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """The other certificates in chain order (issuing CA first, root last), whatever
    order the file lists them in; any that are not in the chain follow as they came."""
    remaining = list(others)
    ordered: list[x509.Certificate] = []
    current = certificate
    while True:
        issuer = next((c for c in remaining if c.subject == current.issuer), None)
        if issuer is None or current.subject == current.issuer:
            break
        ordered.append(issuer)
        remaining.remove(issuer)
        current = issuer
    return (*ordered, *remaining)


def _definite_lengths(data: bytes) -> bytes:
    """The file in DER. NSS (Thunderbird, Firefox, pk12util) writes BER with indefinite
    lengths, which pyca/cryptography reads only with a UserWarning on the terminal. Only
    the outer structure is re-encoded: the authenticated safe stays byte for byte as it
    is (the MAC covers those bytes), and pyca/cryptography reads BER inside it quietly."""
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        der: bytes = pfx.dump(force=True)
    except Exception as exc:  # asn1crypto parses lazily and raises many types
        raise PKCS12Error(_BAD_FILE) from exc
    return der


def _check_kdf_rounds(data: bytes) -> None:
    """Refuse files whose stated iteration counts would tie up the CPU (see the cap).

    Covers the MAC, encrypted safes and shrouded key bags in plain safes: all that is
    readable before decryption. A key bag nested inside an encrypted safe is only
    reached after a successful (bounded) decryption with the right password.
    """
    try:
        pfx = asn1_pkcs12.Pfx.load(data)
        mac = pfx["mac_data"]
        rounds = [] if mac.native is None else [int(mac["iterations"].native)]
        for info in pfx.authenticated_safe:
            kind = info["content_type"].native
            if kind == "encrypted_data":
                algorithm = info["content"]["encrypted_content_info"]
                rounds.append(algorithm["content_encryption_algorithm"].kdf_iterations)
            elif kind == "data":
                rounds.extend(_bag_rounds(asn1_pkcs12.SafeContents.load(info["content"].native)))
    except Exception as exc:  # asn1crypto parses lazily and raises many types
        raise PKCS12Error(_BAD_FILE) from exc
    worst = max(rounds, default=0)
    if worst > PKCS12_MAX_KDF_ROUNDS:
        raise PKCS12Error(
            f"the PKCS#12 file asks for {worst} key-derivation rounds; "
            f"at most {PKCS12_MAX_KDF_ROUNDS} are accepted"
        )


def _bag_rounds(bags: Iterable[asn1_pkcs12.SafeBag]) -> list[int]:
    rounds: list[int] = []
    for bag in bags:
        kind = bag["bag_id"].native
        if kind == "pkcs8_shrouded_key_bag":
            rounds.append(int(bag["bag_value"]["encryption_algorithm"].kdf_iterations))
        elif kind == "safe_contents":
            rounds.extend(_bag_rounds(bag["bag_value"]))
    return rounds
