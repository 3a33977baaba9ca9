"""Creating a Key Recovery Service home: settings, database, keys, audit log."""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from mailpki.audit import genesis
from mailpki.base.files import write_atomically
from mailpki.errors import InstanceError, MailPKIError
from mailpki.keystore.keys import parse_key_type
from mailpki.recovery.admission import Trust
from mailpki.recovery.config import ServiceConfig
from mailpki.recovery.service import AUDIT_PUBLIC, KEYS_DIR, RecoveryService
from mailpki.recovery.transport import REGISTRY, TRANSPORT_MLKEM_PUBLIC, TRANSPORT_PUBLIC


@dataclass(frozen=True)
class ServiceOptions:
    trust_pem: bytes
    settings: dict[str, str] = field(default_factory=dict)


def init_service(home: Path, options: ServiceOptions, *, actor: str) -> RecoveryService:
    """Create a new service home; all or nothing (a failure removes what it made)."""
    if (home / "service.toml").exists():
        raise InstanceError(f"{home} already holds a key recovery service")
    created = not home.exists()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    made: list[Path] = []
    created_keys: list[str] = []
    service: RecoveryService | None = None
    try:
        config = ServiceConfig.create(home, options.settings)
        role_arc = str(config.get("trust.role_oid_arc"))
        Trust.from_pem(options.trust_pem, role_arc)  # refuse a wrong trust file up front
        trust_path = config.path_of("trust.ca_file")
        write_atomically(trust_path, options.trust_pem)
        made.append(trust_path)
        uses_default_passphrase = (
            config.get("keys.backend") == "file"
            and not config.get("keys.passphrase_env")
            and not config.path_of("keys.passphrase_file").exists()
        )
        if uses_default_passphrase:
            secret_path = config.path_of("keys.passphrase_file")
            secret_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(secret_path, secrets.token_urlsafe(32).encode(), private=True)
            made.append(secret_path.parent)
        config.save()
        made.append(config.path)
        service = RecoveryService(config)
        made.append(home / KEYS_DIR)
        # The first transport key generation: RSA (file or token) and ML-KEM-768 (an
        # encrypted file in every case, see keystore/mlkem_keys.py), self-tested.
        created_keys.append(service.transport_label)
        generation = service.transport.make_generation(
            str(config.get("keys.label_prefix")),
            parse_key_type(str(config.get("transport.key_type"))),
            first=True,
        )
        created_keys.append(service.audit_label)
        audit_key = service.keys.generate(service.audit_label, "p256")
        made += [home / REGISTRY, home / TRANSPORT_PUBLIC, home / TRANSPORT_MLKEM_PUBLIC]
        service.transport.save([generation])
        write_atomically(
            home / AUDIT_PUBLIC,
            audit_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        made.append(home / AUDIT_PUBLIC)
        service.db.migrate()
        with service.db.transaction() as session:
            genesis(session)
            service.audit.append(
                session,
                "service.created",
                actor=actor,
                data={
                    "service_id": service.service_id,
                    "quorum": service.quorum,
                    "keys": service.keys.describe(),
                },
            )
            service.audit.checkpoint(session)
        return service
    except BaseException:
        if service is not None:
            _remove_keys(service, created_keys)
            service.close()
        _undo(home, made, created)
        raise


def _remove_keys(service: RecoveryService, labels: list[str]) -> None:
    try:
        for label in labels:
            if service.keys.exists(label):
                service.keys.remove(label)
            if service.transport.mlkem_files.exists(f"{label}-mlkem"):
                service.transport.mlkem_files.remove(f"{label}-mlkem")
    except MailPKIError:
        pass


def _undo(home: Path, made: list[Path], created: bool) -> None:
    try:
        if created:
            shutil.rmtree(home, ignore_errors=True)
            return
        for path in reversed(made):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - best effort
        pass
