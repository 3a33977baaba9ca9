"""`mailpki init`: a new instance, all or nothing."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mailpki.audit import genesis
from mailpki.base.files import folder_entries, remove_new_entries, write_atomically
from mailpki.ca.setup import AUDIT_KEY, create_hierarchy
from mailpki.errors import InstanceError, MailPKIError
from mailpki.instance.audit_witnesses import hand_over_quietly
from mailpki.instance.config import CONFIG_FILE, Config
from mailpki.instance.instance import Instance
from mailpki.instance.layout import (
    AUDIT_PUBLIC_KEY,
    CA_DIR,
    CA_FILES,
    KEYS_DIR,
    PROFILES_DIR,
    RECOVERY_DIR,
    TRANSPORT_KEY_FILE,
    TRANSPORT_MLKEM_KEY_FILE,
)
from mailpki.recovery.setup import ServiceOptions, init_service

GENERATED_PASSPHRASE = "secrets/ca-passphrase"  # noqa: S105 - a path, not a secret


@dataclass(frozen=True)
class PKCS11Options:
    module: Path
    token: str
    pin_file: Path


@dataclass(frozen=True)
class InitOptions:
    org: str
    domain: str
    org_id: str | None = None
    ca_key_type: str = "rsa3072"
    database_url: str | None = None
    base_url: str | None = None
    pkcs11: PKCS11Options | None = None
    passphrase_file: Path | None = None
    passphrase_env: str | None = None
    # The embedded key recovery service (HOME/krs): its OAEP hash and alert contacts.
    recovery_oaep_hash: str = "sha256"
    recovery_alert_contacts: tuple[str, ...] = ()


@dataclass(frozen=True)
class InitResult:
    instance: Instance
    generated_passphrase: Path | None


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _config_values(home: Path, options: InitOptions) -> tuple[dict[str, str], Path | None]:
    values = {
        "instance.org": options.org,
        "instance.domain": options.domain,
        "ca.key_type": options.ca_key_type,
    }
    if options.org_id:
        values["instance.org_id"] = options.org_id
    else:
        # Sponsor-validated profiles need a registered organisation identifier that only
        # the operator can give; until then the default is the mailbox-validated profile.
        values["ca.default_profile"] = "mailbox-strict"
    if options.database_url:
        values["database.url"] = options.database_url
    # Certificates carry these URLs to every correspondent: a name under the mail
    # domain (pkilint refuses internal names such as localhost in CDP and AIA).
    values["web.base_url"] = options.base_url or f"http://pki.{options.domain}"
    values["keymanager.pool_salt"] = secrets.token_hex(16)
    values["recovery.oaep_hash"] = options.recovery_oaep_hash
    generated: Path | None = None
    if options.pkcs11:
        if not options.pkcs11.pin_file.is_file():
            raise InstanceError(f"the PIN file {options.pkcs11.pin_file} does not exist")
        values |= {
            "keys.backend": "pkcs11",
            "keys.pkcs11_module": str(options.pkcs11.module.resolve()),
            "keys.pkcs11_token": options.pkcs11.token,
            "keys.pkcs11_pin_file": str(options.pkcs11.pin_file.resolve()),
        }
    elif options.passphrase_env:
        if not os.environ.get(options.passphrase_env):
            raise InstanceError(f"the environment variable {options.passphrase_env} is not set")
        values["keys.passphrase_env"] = options.passphrase_env
    elif options.passphrase_file:
        if not options.passphrase_file.is_file():
            raise InstanceError(f"the passphrase file {options.passphrase_file} does not exist")
        values["keys.passphrase_file"] = str(options.passphrase_file.resolve())
    else:
        # Embedded default: a random passphrase beside the instance, readable by its owner only.
        generated = home / GENERATED_PASSPHRASE
        _write_private(generated, secrets.token_urlsafe(32).encode() + b"\n")
        values["keys.passphrase_file"] = GENERATED_PASSPHRASE
    return values, generated


def initialise(home: Path, options: InitOptions, *, actor: str) -> InitResult:
    """Create the instance; on any failure remove what was created and re-raise."""
    if (home / CONFIG_FILE).exists():
        raise InstanceError(f"{home} already holds a mailpki instance ({CONFIG_FILE} exists)")
    if (home / KEYS_DIR).exists() or (home / CA_DIR).exists():
        raise InstanceError(
            f"{home} holds keys or CA files of an earlier instance; use another folder"
        )
    home_existed, existing = folder_entries(home)
    created_keys: list[str] = []
    instance: Instance | None = None
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        values, generated = _config_values(home, options)
        config = Config.create(home, values)
        instance = Instance(config)
        db = instance.db
        if db.is_initialised():
            raise InstanceError(
                "the database already holds a mailpki instance; give an empty database"
            )
        db.migrate()
        with db.transaction() as session:
            genesis(session)

        keys = instance.keys
        audit_key = keys.generate(AUDIT_KEY, "p256")
        created_keys.append(AUDIT_KEY)
        (home / CA_DIR).mkdir(mode=0o755, exist_ok=True)
        (home / CA_DIR / AUDIT_PUBLIC_KEY).write_bytes(
            audit_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
        created_keys += ["root", "issuing", "ocsp"]
        hierarchy = create_hierarchy(
            db=db,
            keys=keys,
            audit=instance.audit,
            settings=instance.ca_settings,
            org=options.org,
            key_type=options.ca_key_type,
            ocsp_key_type=str(config.get("ocsp.key_type")),
            actor=actor,
        )
        for name, certificate in (
            ("root", hierarchy.root),
            ("issuing", hierarchy.issuing),
            ("ocsp", hierarchy.ocsp),
        ):
            (home / CA_DIR / CA_FILES[name]).write_bytes(certificate.public_bytes(Encoding.PEM))
        (home / PROFILES_DIR).mkdir(exist_ok=True)
        list(instance.ca.generate_all_crls(actor=actor))
        _create_embedded_recovery(instance, options, actor=actor)
        with db.transaction() as session:
            instance.audit.checkpoint(session)
        config.save()  # last: a config file means a complete instance
    except BaseException:
        _undo(home, home_existed, existing, instance, created_keys)
        raise
    assert instance is not None
    hand_over_quietly(instance)  # the first checkpoint leaves at once (best effort)
    return InitResult(instance, generated)


def _create_embedded_recovery(instance: Instance, options: InitOptions, *, actor: str) -> None:
    """The embedded default: a Key Recovery Service with its own home, database and keys
    inside this home, reached only through the recovery client; its public key is pinned."""
    config = instance.config
    settings = {
        "transport.oaep_hash": options.recovery_oaep_hash,
        "smtp.from": f"krs@{options.domain}",
        "trust.role_oid_arc": str(config.get("admin.role_oid_arc")),
    }
    if options.recovery_alert_contacts:
        settings["alerts.contacts"] = ",".join(options.recovery_alert_contacts)
    if options.pkcs11:  # the same token, with the service's own labels
        settings |= {
            "keys.backend": "pkcs11",
            "keys.pkcs11_module": str(options.pkcs11.module.resolve()),
            "keys.pkcs11_token": options.pkcs11.token,
            "keys.pkcs11_pin_file": str(options.pkcs11.pin_file.resolve()),
        }
    service = init_service(
        config.path_of("recovery.home"),
        ServiceOptions(trust_pem=instance.chain_pem(), settings=settings),
        actor=actor,
    )
    try:
        (instance.home / RECOVERY_DIR).mkdir(mode=0o755, exist_ok=True)
        write_atomically(
            instance.home / RECOVERY_DIR / TRANSPORT_KEY_FILE, service.transport_public_pem
        )
        mlkem_pem = service.transport.current.mlkem_public_pem
        if mlkem_pem is not None:
            write_atomically(instance.home / RECOVERY_DIR / TRANSPORT_MLKEM_KEY_FILE, mlkem_pem)
            config.set("recovery.wrap", "hybrid-mlkem768")  # the default of new instances
        config.set("recovery.service_id", service.service_id)
    finally:
        service.close()


def _undo(
    home: Path, home_existed: bool, existing: set[str], instance: Instance | None, keys: list[str]
) -> None:
    """Remove what initialise() created, and only that."""
    if instance is not None:
        try:
            store = instance.keys
            for label in keys:
                if store.exists(label):
                    store.remove(label)
        except MailPKIError:
            pass  # nothing more we can do here; the files go below
        instance.close()
    remove_new_entries(home, home_existed, existing)
