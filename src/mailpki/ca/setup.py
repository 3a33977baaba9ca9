"""Creating a CA hierarchy: root, issuing CA and delegated OCSP responder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mailpki.audit import AuditLog
from mailpki.ca.authority import CAHierarchy, certificate_record, reserve_serial
from mailpki.ca.lint import Linter
from mailpki.ca.listing import ISSUING, OCSP_PROFILE, ROOT
from mailpki.ca.settings import ROOT_CRL, CASettings, issuing_label
from mailpki.ca.signing import lint_for_signing, signature_hash
from mailpki.errors import CAError, KeyStoreError
from mailpki.keystore.key_types import KeyType
from mailpki.keystore.keys import CAPrivateKey, KeyStore, key_type_of, parse_key_type
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


def _key_type_of_certificate(certificate: x509.Certificate) -> KeyType:
    """The key type of a CA certificate's key: the next generation uses the same."""
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CAError("the issuing CA's key is neither RSA nor EC")
    return key_type_of(public)


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
    if hierarchy.earlier:
        raise CAError(
            "the issuing CA was rolled over: make the next generation with "
            "'mailpki ca issuing rollover' instead of re-signing"
        )
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


@dataclass(frozen=True)
class RolledOver:
    """A new issuing CA generation and the OCSP responder certificate it signed."""

    label: str
    issuing: x509.Certificate
    ocsp: x509.Certificate


def rollover_issuing(
    *,
    db: Database,
    keys: KeyStore,
    audit: AuditLog,
    settings: CASettings,
    hierarchy: CAHierarchy,
    org: str,
    actor: str,
    years: int = 10,
) -> RolledOver:
    """Make the next issuing CA generation under the root: a new key in the key store
    (file or token, like the others), a certificate with a distinct name signed by the
    root, and a delegated OCSP responder certificate (the responder key is shared).

    The older issuing CAs keep their keys: each signs the CRLs and OCSP answers of the
    certificates it issued until the last of them expires.
    """
    if not keys.exists(ROOT):
        raise CAError(
            "the root key is offline (not in this instance): bring it back with "
            "'mailpki ca root import', then roll over"
        )
    generation = hierarchy.generation + 1
    label = issuing_label(generation)
    if keys.exists(label):
        raise CAError(
            f"a key {label!r} already exists but no certificate for it: an earlier rollover "
            "was interrupted; remove that key from the key store, then roll over again"
        )
    root_key = keys.load(ROOT)
    issuing_key = keys.generate(label, _key_type_of_certificate(hierarchy.issuing))
    names = hierarchy.issuing_of(ISSUING).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    first_name = str(names[0].value) if names else f"{org} S/MIME Issuing CA"
    serial, _ = reserve_serial(db, ROOT)
    now = datetime.now(UTC)
    issuing = _linted_sign(
        build_issuing_ca(
            org=org,
            public_key=issuing_key.public_key(),
            root=hierarchy.root,
            serial=serial,
            now=now,
            urls=CACertificateUrls(
                root_crl=settings.crl_url(ROOT_CRL), root_issuers=settings.ca_cert_url("root.crt")
            ),
            years=years,
            common_name=f"{first_name} G{generation}",
        ),
        root_key,
    )
    serial, reservation = reserve_serial(db, label)
    responder = _linted_sign(
        build_ocsp_responder(
            org=org,
            public_key=keys.load(OCSP_KEY).public_key(),
            issuer=issuing,
            serial=serial,
            now=now,
        ),
        issuing_key,
    )
    with db.transaction() as session:
        records = [
            certificate_record(issuing, issuer=ROOT, profile="issuing-ca", email=None, partition=0),
            certificate_record(
                responder,
                issuer=label,
                profile=OCSP_PROFILE,
                email=None,
                partition=settings.partition_of(reservation),
            ),
        ]
        session.add_all(records)
        audit.append(
            session,
            "ca.issuing_rolled_over",
            actor=actor,
            data={
                "generation": generation,
                "label": label,
                "subject": issuing.subject.rfc4514_string(),
                "serial": records[0].serial,
                "issuing_fingerprint": records[0].fingerprint,
                "not_after": records[0].not_after.isoformat(),
                "previous_fingerprint": hashlib.sha256(
                    hierarchy.issuing.public_bytes(Encoding.DER)
                ).hexdigest(),
                "ocsp_fingerprint": records[1].fingerprint,
                "keys": keys.describe(),
            },
        )
    return RolledOver(label=label, issuing=issuing, ocsp=responder)
