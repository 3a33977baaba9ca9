"""Use cases the CLI and the web layer share: each one opens what it needs from an
Instance, does the work through the components' public functions, and seals the
audit log when it changed state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailpki.base.files import write_atomically
from mailpki.ca.authority import CRLInfo, display_name
from mailpki.ca.listing import ROOT
from mailpki.ca.serials import show_serial
from mailpki.ca.settings import ROOT_CRL
from mailpki.errors import CAError, InputError, KeyStoreError
from mailpki.instance.instance import Instance
from mailpki.instance.layout import CA_DIR, CA_FILES, issuing_file, responder_file
from mailpki.policy.person import Person

if TYPE_CHECKING:
    from mailpki.ca.setup import RolledOver


@dataclass(frozen=True)
class IssuedView:
    serial: str
    profile: str
    subject: str
    not_after: datetime
    pem: bytes


def person_for(
    instance: Instance,
    *,
    name: str,
    email: str,
    profile: str | None,
    organisation: str | None = None,
    site: str | None = None,
    given_name: str | None = None,
    surname: str | None = None,
) -> Person:
    """The checked subscriber for `profile`, with the instance's organisation data."""
    org_id = str(instance.config.get("instance.org_id")) or None
    chosen = instance.ca.profile(profile)
    if chosen.needs_organisation_identifier and org_id is None:
        raise InputError(
            f"profile {chosen.name} needs the organisation identifier (S/MIME BR 7.1.4.2.2): "
            "set it with 'mailpki config set instance.org_id NTRGB-12345678' (your registration)"
        )
    return Person.from_untrusted(
        name=name,
        email=email,
        organisation=organisation or str(instance.config.get("instance.org")),
        site=site,
        given_name=given_name,
        surname=surname,
        organisation_identifier=org_id,
    )


def issue_from_csr(
    instance: Instance,
    csr_data: bytes,
    *,
    name: str,
    email: str,
    organisation: str | None,
    site: str | None,
    profile: str | None,
    actor: str,
    given_name: str | None = None,
    surname: str | None = None,
) -> IssuedView:
    person = person_for(
        instance,
        name=name,
        email=email,
        profile=profile,
        organisation=organisation,
        site=site,
        given_name=given_name,
        surname=surname,
    )
    issued = instance.ca.issue_from_csr(csr_data, person, profile=profile, actor=actor)
    cert = issued.certificate
    return IssuedView(
        serial=issued.serial,
        profile=issued.profile,
        subject=display_name(cert.subject),
        not_after=cert.not_valid_after_utc,
        pem=cert.public_bytes(Encoding.PEM),
    )


def write_crls(instance: Instance, folder: Path, *, actor: str) -> tuple[list[CRLInfo], str | None]:
    """Sign every CRL and write it as DER into folder; the root CRL is copied from the
    store when the root key is offline (with a warning when it nears its next update)."""
    ca = instance.ca
    root_online = ca.root_is_online
    written = list(ca.generate_all_crls(actor=actor, root=root_online))
    warning = None
    if not root_online:
        stored = ca.stored_crl(ROOT_CRL)
        if stored is None:
            raise CAError("the root key is offline and no root CRL was ever signed")
        written.append(stored)
        warning = (
            f"the root key is offline: {ROOT_CRL} is the stored one (next update "
            f"{stored.next_update:%Y-%m-%d}); import the root key before then to re-sign it"
        )
    for info in written:
        write_atomically(folder / info.name, info.der)
    instance.seal()
    return written, warning


def export_root_key(instance: Instance, passphrase: bytes, *, actor: str) -> bytes:
    pem = instance.keys.export_pem(ROOT, passphrase)
    with instance.db.transaction() as session:
        instance.audit.append(session, "ca.root_key_exported", actor=actor, data={})
    instance.seal()
    return pem


def remove_root_key(instance: Instance, *, actor: str) -> None:
    if not instance.ca.root_is_online:
        raise KeyStoreError("the root key is not in this instance (already offline)")
    with instance.db.transaction() as session:
        instance.audit.append(session, "ca.root_key_removed", actor=actor, data={})
        instance.keys.remove(ROOT)
    instance.seal()


def import_root_key(instance: Instance, pem: bytes, passphrase: bytes, *, actor: str) -> None:
    from mailpki.keystore.keys import load_pem_key

    key = load_pem_key(pem, passphrase)
    expected = instance.hierarchy.root.public_key()
    if key.public_key().public_numbers() != expected.public_numbers():  # type: ignore[union-attr]
        raise KeyStoreError("that key is not the key of this instance's root CA")
    with instance.db.transaction() as session:
        instance.audit.append(session, "ca.root_key_imported", actor=actor, data={})
        instance.keys.import_pem(ROOT, pem, passphrase)
    instance.seal()


def renew_issuing_ca(instance: Instance, *, years: int, actor: str) -> x509.Certificate:
    """Re-sign the issuing CA with the root; the old certificate is kept beside it."""
    from mailpki.ca.setup import renew_issuing

    old = instance.hierarchy.issuing
    renewed = renew_issuing(
        db=instance.db,
        keys=instance.keys,
        audit=instance.audit,
        settings=instance.ca_settings,
        hierarchy=instance.hierarchy,
        org=str(instance.config.get("instance.org")),
        actor=actor,
        years=years,
    )
    folder = instance.home / CA_DIR
    (folder / f"issuing-{show_serial(old.serial_number)}.pem").write_bytes(
        old.public_bytes(Encoding.PEM)
    )
    write_atomically(folder / CA_FILES["issuing"], renewed.public_bytes(Encoding.PEM))
    instance.__dict__.pop("hierarchy", None)
    instance.__dict__.pop("ca", None)
    instance.seal()
    return renewed


def rollover_issuing_ca(instance: Instance, *, years: int, actor: str) -> RolledOver:
    """Make the next issuing CA generation; new certificates come from it from now on.

    The responder certificate is written before the CA certificate: an instance reads
    a generation only when its CA certificate file exists."""
    from mailpki.ca.setup import rollover_issuing

    rolled = rollover_issuing(
        db=instance.db,
        keys=instance.keys,
        audit=instance.audit,
        settings=instance.ca_settings,
        hierarchy=instance.hierarchy,
        org=str(instance.config.get("instance.org")),
        actor=actor,
        years=years,
    )
    folder = instance.home / CA_DIR
    generation = instance.hierarchy.generation + 1
    write_atomically(folder / responder_file(generation), rolled.ocsp.public_bytes(Encoding.PEM))
    write_atomically(folder / issuing_file(generation), rolled.issuing.public_bytes(Encoding.PEM))
    instance.__dict__.pop("hierarchy", None)
    instance.__dict__.pop("ca", None)
    instance.__dict__.pop("publisher", None)
    instance.seal()
    return rolled
