"""Bringing an instance's databases to the schema this version of mailpki ships."""

from __future__ import annotations

from dataclasses import dataclass

from mailpki.instance.instance import Instance
from mailpki.recovery.service import RecoveryService
from mailpki.store.db import head_revision

AUDIT_KEYS = "ECDSA + ML-DSA-65"


@dataclass(frozen=True)
class SchemaChange:
    """One database's schema revision (or, with ``what="keys"``, the audit keys) before
    and after an upgrade."""

    database: str
    before: str | None
    after: str | None
    what: str = "schema"

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade(instance: Instance, *, actor: str) -> list[SchemaChange]:
    """Run the pending migrations of the instance's database (and of the embedded
    recovery service's), make the ML-DSA-65 audit key of an instance from before
    post-quantum checkpoints (recorded as ``audit.key_added``), audit the upgrade when
    anything changed, and seal (so the witnesses get the checkpoints). Safe to run again."""
    changes = []
    before = instance.db.schema_revision()
    instance.db.migrate()
    after = instance.db.schema_revision()
    changes.append(SchemaChange("instance", before, after))
    if instance.recovery_client.is_local:
        service: RecoveryService = instance.recovery_client.local_service()
        old = service.db.schema_revision()
        service.db.migrate()
        changes.append(SchemaChange("recovery service", old, service.db.schema_revision()))
    classic_only = instance.audit_keys().mldsa is None
    instance.audit  # noqa: B018 - an older instance gets its ML-DSA-65 key here (audited)
    changes.append(
        SchemaChange(
            "audit",
            "ECDSA" if classic_only else AUDIT_KEYS,
            AUDIT_KEYS if instance.audit_keys().mldsa is not None else "ECDSA",
            what="keys",
        )
    )
    if any(change.changed for change in changes):
        with instance.db.transaction() as session:
            instance.audit.append(
                session,
                "instance.upgraded",
                actor=actor,
                data={c.database: f"{c.before} -> {c.after}" for c in changes if c.changed},
            )
    instance.seal()
    return changes


def schema_is_current(instance: Instance) -> bool:
    """Whether the instance's database is at the newest migration (a node on an older
    schema must not serve)."""
    return instance.db.schema_revision() == head_revision()
