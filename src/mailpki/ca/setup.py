"""Creating a CA hierarchy: root, issuing CA and delegated OCSP responder."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mailpki.audit import AuditLog
from mailpki.ca.authority import (
    ISSUING,
    OCSP_PROFILE,
    ROOT,
    CAHierarchy,
    certificate_record,
    reserve_serial,
)
from mailpki.ca.lint import Linter
from mailpki.ca.settings import ROOT_CRL, CASettings
from mailpki.ca.signing import lint_for_signing, signature_hash
from mailpki.errors import CAError, KeyStoreError
from mailpki.keystore.keys import CAPrivateKey, KeyStore, parse_key_type
from mailpki.policy.hierarchy import (
    CACertificateUrls,
    build_issuing_ca,
    build_ocsp_responder,
    build_root_ca,
)
from mailpki.store.db import Database

SELF = "self"
AUDIT_KEY = "audit"
OCSP_KEY = "ocsp"


def _linted_sign(builder: x509.CertificateBuilder, key: CAPrivateKey) -> x509.Certificate:
    """CA certificates too are signed only after a clean lint (RFC 5280 profile)."""
    return lint_for_signing(builder, key=key, linter=_ca_linter(), lint_type=None).sign(key)


def _self_signed_linted(builder: x509.CertificateBuilder, key: CAPrivateKey) -> x509.Certificate:
    """A root is only self-signed with its own key (a throwaway key would make it look
    cross-signed to the linter), so it is linted right after signing and discarded on
    any finding: nothing has used it yet."""
    root = builder.sign(key, signature_hash(key))
    _ca_linter().check(root.public_bytes(Encoding.DER), None)
    return root


@cache
def _ca_linter() -> Linter:
    return Linter()


def create_hierarchy(
    *,
    db: Database,
    keys: KeyStore,
    audit: AuditLog,
    settings: CASettings,
    org: str,
    key_type: str,
    ocsp_key_type: str,
    actor: str,
) -> CAHierarchy:
    """Generate the CA keys in the key store, sign the three certificates, record them."""
    now = datetime.now(UTC)
    root_key = keys.generate(ROOT, parse_key_type(key_type))
    issuing_key = keys.generate(ISSUING, parse_key_type(key_type))
    ocsp_key = keys.generate(OCSP_KEY, parse_key_type(ocsp_key_type))

    serial, _ = reserve_serial(db, SELF)
    root = _self_signed_linted(
        build_root_ca(org=org, public_key=root_key.public_key(), serial=serial, now=now), root_key
    )
    serial, _ = reserve_serial(db, ROOT)
    issuing = _linted_sign(
        build_issuing_ca(
            org=org,
            public_key=issuing_key.public_key(),
            root=root,
            serial=serial,
            now=now,
            urls=CACertificateUrls(
                root_crl=settings.crl_url(ROOT_CRL), root_issuers=settings.ca_cert_url("root.crt")
            ),
        ),
        root_key,
    )
    serial, reservation = reserve_serial(db, ISSUING)
    responder = _linted_sign(
        build_ocsp_responder(
            org=org, public_key=ocsp_key.public_key(), issuer=issuing, serial=serial, now=now
        ),
        issuing_key,
    )

    with db.transaction() as session:
        records = [
            certificate_record(root, issuer=SELF, profile="root-ca", email=None, partition=0),
            certificate_record(issuing, issuer=ROOT, profile="issuing-ca", email=None, partition=0),
            certificate_record(
                responder,
                issuer=ISSUING,
                profile=OCSP_PROFILE,
                email=None,
                partition=settings.partition_of(reservation),
            ),
        ]
        session.add_all(records)
        audit.append(
            session,
            "ca.initialised",
            actor=actor,
            data={
                "org": org,
                "key_type": key_type,
                "keys": keys.describe(),
                **{f"{r.profile}_fingerprint": r.fingerprint for r in records},
            },
        )
    return CAHierarchy(root=root, issuing=issuing, ocsp=responder)


def renew_issuing(
    *,
    db: Database,
    keys: KeyStore,
    audit: AuditLog,
    settings: CASettings,
    hierarchy: CAHierarchy,
    org: str,
    actor: str,
    years: int = 10,
) -> x509.Certificate:
    """Re-sign the issuing CA's key with the root (same name and key, new validity).

    Certificates already issued keep chaining: their AKI names the same key.
    """
    try:
        root_key = keys.load(ROOT)
    except KeyStoreError:
        raise CAError(
            "re-signing the issuing CA needs the root key; bring it back with 'mailpki ca root import'"
        ) from None
    issuing_key = keys.load(ISSUING)
    names = hierarchy.issuing.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    serial, _ = reserve_serial(db, ROOT)
    renewed = _linted_sign(
        build_issuing_ca(
            org=org,
            public_key=issuing_key.public_key(),
            root=hierarchy.root,
            serial=serial,
            now=datetime.now(UTC),
            urls=CACertificateUrls(
                root_crl=settings.crl_url(ROOT_CRL), root_issuers=settings.ca_cert_url("root.crt")
            ),
            years=years,
            common_name=str(names[0].value) if names else None,
        ),
        root_key,
    )
    if renewed.subject != hierarchy.issuing.subject:
        raise CAError("the renewed issuing CA would change its name; refusing")
    with db.transaction() as session:
        record = certificate_record(
            renewed, issuer=ROOT, profile="issuing-ca", email=None, partition=0
        )
        session.add(record)
        audit.append(
            session,
            "ca.issuing_renewed",
            actor=actor,
            data={
                "serial": record.serial,
                "fingerprint": record.fingerprint,
                "not_after": record.not_after.isoformat(),
            },
        )
    return renewed
