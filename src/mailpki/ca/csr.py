"""Loading certificate signing requests: untrusted input, checked strictly."""

from __future__ import annotations

import re

from cryptography import x509

from mailpki.errors import CSRError

MAX_CSR_BYTES = 64 * 1024
_PEM_BLOCK = re.compile(
    rb"-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n[A-Za-z0-9+/=\r\n]+-----END (NEW )?CERTIFICATE REQUEST-----"
)


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
            blocks = _PEM_BLOCK.findall(stripped)
            if not blocks and b"CERTIFICATE REQUEST-----" in stripped:
                raise CSRError("the PEM 'CERTIFICATE REQUEST' block is truncated or damaged")
            if not blocks:
                raise CSRError("the file is PEM but holds no 'CERTIFICATE REQUEST' block")
            if len(blocks) != 1 or _PEM_BLOCK.fullmatch(stripped) is None:
                raise CSRError(
                    "the CSR file must hold exactly one PEM 'CERTIFICATE REQUEST' block "
                    "and nothing else"
                )
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
