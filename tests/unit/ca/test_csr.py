"""The CSR parser takes outside input: it must refuse everything but one valid CSR."""

from __future__ import annotations

import contextlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpki.ca.csr import MAX_CSR_BYTES, load_csr
from mailpki.errors import CSRError

KEY = ec.generate_private_key(ec.SECP256R1())
CSR = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
    .sign(KEY, hashes.SHA256())
)
PEM = CSR.public_bytes(Encoding.PEM)
DER = CSR.public_bytes(Encoding.DER)


def test_pem_and_der_load() -> None:
    assert load_csr(PEM).public_key() == KEY.public_key()
    assert load_csr(DER).public_key() == KEY.public_key()
    assert load_csr(b"\n  " + PEM + b"\n\n").public_key() == KEY.public_key()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"junk\n" + PEM, "exactly one PEM"),
        (PEM + b"junk", "exactly one PEM"),
        (PEM + PEM, "exactly one PEM"),
        (PEM[: len(PEM) // 2], "truncated or damaged"),
        (DER[: len(DER) // 2], "cannot be parsed"),
        (
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "not a 'CERTIFICATE REQUEST'",
        ),
        (b"A" * (MAX_CSR_BYTES + 1), "limit"),
    ],
)
def test_bad_input_is_refused_clearly(data: bytes, message: str) -> None:
    with pytest.raises(CSRError, match=message):
        load_csr(data)


def test_altered_csr_fails_its_signature() -> None:
    tampered = bytearray(DER)
    index = DER.index(b"alice")
    tampered[index] = ord("A")
    with pytest.raises(CSRError, match="self-signature"):
        load_csr(bytes(tampered))


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_random_bytes_give_csr_error_only(data: bytes) -> None:
    with contextlib.suppress(CSRError):
        load_csr(data)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=len(DER) - 1), st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_refused_or_still_proves_possession(index: int, flip: int) -> None:
    data = bytearray(DER)
    data[index] ^= flip
    try:
        csr = load_csr(bytes(data))
    except CSRError:
        return
    # Survivors are CSRs whose self-signature still verifies (e.g. a flip in an unsigned field).
    assert csr.is_signature_valid
