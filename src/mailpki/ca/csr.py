"""Loading certificate signing requests: untrusted input, checked strictly."""

from __future__ import annotations

from cryptography import x509

from mailpki.base.pem import require_single_block
from mailpki.errors import CSRError, InputError

MAX_CSR_BYTES = 64 * 1024
_CSR_LABELS = ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR and verify its self-signature (proof of possession).

    Nothing but the public key of the result may be trusted by the caller.
    """
    if len(data) > MAX_CSR_BYTES:
        raise CSRError(f"the CSR is {len(data)} bytes; the limit is {MAX_CSR_BYTES}")
    if not data.strip():
        raise CSRError("the CSR file is empty")
    stripped = data.strip()
    try:
        if b"-----BEGIN" in stripped:
            try:
                require_single_block(stripped, _CSR_LABELS, "'CERTIFICATE REQUEST'")
            except InputError as exc:
                raise CSRError(str(exc)) from None
            csr = x509.load_pem_x509_csr(stripped)
        else:
            csr = x509.load_der_x509_csr(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CSRError(f"the CSR cannot be parsed: {exc}") from None
    try:
        csr.public_key()  # an unknown key algorithm fails here, before anyone relies on it
        valid = csr.is_signature_valid
    except Exception as exc:
        raise CSRError(f"the CSR's signature cannot be checked: {exc}") from None
    if not valid:
        raise CSRError(
            "the CSR's self-signature is invalid (it was altered or not signed by its key)"
        )
    return csr
