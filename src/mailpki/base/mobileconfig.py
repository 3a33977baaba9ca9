"""Apple configuration profiles (.mobileconfig) for iPhone, iPad and macOS.

Two kinds: one holding a root certificate (payload ``com.apple.security.root``), and
one holding a person's PKCS#12 (``com.apple.security.pkcs12``) with that root beside it.
The profiles are unsigned (iOS shows them as "Not Verified"; the root's fingerprint is
what a person checks). A PKCS#12 profile never carries the file's password: the
optional ``Password`` key would store it in clear inside the profile, so it is left
out and iOS asks for the password while installing.

UUIDs and identifiers are derived from the content, so the same certificate gives the
same profile and installing it again replaces the earlier one instead of adding a
second.
"""

from __future__ import annotations

import plistlib
import re
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["MEDIA_TYPE", "pkcs12_profile", "profile_prefix", "root_profile"]

MEDIA_TYPE = "application/x-apple-aspen-config"
_NAMESPACE = uuid.UUID("4f1b1d5e-8a43-5b7c-9d0e-6d61696c706b")  # fixed: mailpki profiles


def profile_prefix(domain: str) -> str:
    """A reverse-DNS identifier prefix from a mail domain: example.com -> com.example.mailpki."""
    labels = [re.sub(r"[^a-z0-9-]", "-", label) for label in domain.lower().split(".") if label]
    return ".".join([*reversed(labels), "mailpki"]) if labels else "mailpki"


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\x00".join(parts))).upper()


def _root_payload(root: x509.Certificate, prefix: str) -> dict[str, Any]:
    fingerprint = root.fingerprint(hashes.SHA256()).hex()
    return {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{prefix}.root.{fingerprint[:16]}",
        "PayloadUUID": _uuid("root", fingerprint),
        "PayloadDisplayName": _common_name(root),
        "PayloadDescription": "The root certificate of your organisation's secure mail",
        "PayloadCertificateFileName": "root.cer",
        "PayloadContent": root.public_bytes(Encoding.DER),
    }


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()


def _profile(
    payloads: list[dict[str, Any]],
    *,
    identifier: str,
    display_name: str,
    description: str,
    organisation: str,
) -> bytes:
    document = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": _uuid("profile", identifier, *(p["PayloadUUID"] for p in payloads)),
        "PayloadDisplayName": display_name,
        "PayloadDescription": description,
        "PayloadOrganization": organisation,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": payloads,
    }
    return plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=True)


def root_profile(root: x509.Certificate, *, organisation: str, domain: str) -> bytes:
    """A profile that installs the organisation's root certificate."""
    prefix = profile_prefix(domain)
    return _profile(
        [_root_payload(root, prefix)],
        identifier=f"{prefix}.trust",
        display_name=f"{organisation} secure mail root",
        description=(
            f"Lets this device check signatures of {organisation} mail and encrypt to its "
            "people. Compare the root's SHA-256 fingerprint with the one your contact published."
        ),
        organisation=organisation,
    )


def pkcs12_profile(
    pkcs12: bytes,
    *,
    file_name: str,
    certificate: x509.Certificate,
    root: x509.Certificate,
    organisation: str,
    domain: str,
) -> bytes:
    """A profile with a person's PKCS#12 (key and certificate) and the root, without
    the password: iOS asks for it during installation."""
    prefix = profile_prefix(domain)
    serial = format(certificate.serial_number, "x")
    identity = {
        "PayloadType": "com.apple.security.pkcs12",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{prefix}.identity.{serial}",
        "PayloadUUID": _uuid("pkcs12", serial),
        "PayloadDisplayName": f"{_common_name(certificate)} (S/MIME)",
        "PayloadDescription": "Your secure mail key and certificate",
        "PayloadCertificateFileName": file_name,
        "PayloadContent": pkcs12,
        # No "Password" key: it would sit in clear in this file.
    }
    return _profile(
        [identity, _root_payload(root, prefix)],
        identifier=f"{prefix}.identity.{serial}.profile",
        display_name=f"{organisation} secure mail: {_common_name(certificate)}",
        description=(
            "Your S/MIME key and certificate for Mail, with your organisation's root. "
            "iOS asks for the password of your file while installing."
        ),
        organisation=organisation,
    )
