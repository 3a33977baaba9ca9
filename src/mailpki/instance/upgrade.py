"""Bringing an instance's databases to the schema this version of mailpki ships."""

from __future__ import annotations

from dataclasses import dataclass

from mailpki.instance.instance import Instance
from mailpki.recovery.service import RecoveryService
from mailpki.store.db import head_revision


@dataclass(frozen=True)
class SchemaChange:
    """One database's schema revision before and after an upgrade."""

    database: str
    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade(instance: Instance, *, actor: str) -> list[SchemaChange]:
    """Run the pending migrations of the instance's database (and of the embedded
    recovery service's); audited when anything changed. Safe to run again."""
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
    if any(change.changed for change in changes):
        with instance.db.transaction() as session:
            instance.audit.append(
                session,
                "instance.upgraded",
                actor=actor,
                data={c.database: f"{c.before} -> {c.after}" for c in changes if c.changed},
            )
            instance.audit.checkpoint(session)
    return changes


def schema_is_current(instance: Instance) -> bool:
    """Whether the instance's database is at the newest migration (a node on an older
    schema must not serve)."""
    return instance.db.schema_revision() == head_revision()
