"""`keys rewrap`: move every stored recovery block to the service's newest transport key.

  1. The instance learns the newest key generation of its (embedded) recovery service
     and pins it: new blocks are wrapped to it from now on.
  2. The blocks still wrapped otherwise (another key generation, or another wrap
     format than `recovery.wrap`) are read in batches, in id order. Only their wrapped
     keys go to the service, which re-wraps them inside itself (recovery/rotation.py):
     the AES keys never leave it in the clear, and no escrowed private key is ever
     decrypted, here or there.
  3. Each batch's new wrapped keys are written in one transaction with one
     `key.rewrapped` record per block. A row is updated only if its wrapped key is
     still the one sent, so a concurrent change is never overwritten.

The progress is the blocks themselves: a block that is done names the new key, so a
run after a crash (or an error) starts again with the blocks not yet done; at most
the one batch in flight is re-wrapped twice (its service-side records then appear
twice, which is the truth).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update

from mailpki.errors import ConfigError, InputError
from mailpki.instance.instance import Instance
from mailpki.instance.recovery_link import pin, transport_key_of
from mailpki.keystore.recovery_block import TransportKey
from mailpki.recovery.rotation import MAX_BATCH, RewrapItem, rewrap
from mailpki.store.models import EscrowedKey

DEFAULT_BATCH = 500


@dataclass(frozen=True)
class RewrapReport:
    key_id: str
    wrap: str
    learned_new_key: bool
    to_do: int
    rewrapped: int


def learn_newest_key(instance: Instance, *, actor: str) -> bool:
    """Pin the embedded service's newest transport key; True if it was new.

    A service that runs apart is re-pinned with `recovery connect` and the key id its
    operator gives out of band, never on its own word over the network."""
    client = instance.recovery_client
    if not client.is_local:
        raise ConfigError(
            "keys rewrap works with the embedded recovery service only; a service that "
            "runs apart is not supported yet (its blocks stay recoverable with its old keys)"
        )
    info = client.info()
    pinned = str(instance.config.get("recovery.service_id"))
    if str(info.get("service_id")) != pinned:
        raise ConfigError(
            f"the recovery service in {instance.config.get('recovery.home')} is not the "
            f"one this instance pinned ({pinned[:16]}…)"
        )
    key = transport_key_of(
        info, wrap=str(instance.config.get("recovery.wrap")), where="the recovery service"
    )
    return pin(instance, key, service_id=pinned, actor=actor)


def _needs_rewrap(transport: TransportKey):  # type: ignore[no-untyped-def]
    return or_(EscrowedKey.krs_key_id != transport.key_id, EscrowedKey.wrap != transport.wrap)


def blocks_to_rewrap(instance: Instance) -> int:
    """How many stored blocks are not (yet) wrapped to the pinned key as configured."""
    transport = instance.transport_key
    with instance.db.session() as session:
        query = select(func.count()).select_from(EscrowedKey).where(_needs_rewrap(transport))
        return int(session.scalar(query) or 0)


def rewrap_all(
    instance: Instance,
    *,
    actor: str,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
    before_batch: Callable[[int], None] | None = None,
) -> RewrapReport:
    """Re-wrap every block not yet wrapped to the newest key; see the module text.

    `progress(done, total)` after each batch; `before_batch(n)` is a test hook."""
    if not 1 <= batch <= MAX_BATCH:
        raise InputError(f"--batch must be between 1 and {MAX_BATCH:,}")
    learned = learn_newest_key(instance, actor=actor)
    transport = instance.transport_key
    service = instance.recovery_client.local_service()
    total = blocks_to_rewrap(instance)
    done = 0
    last_id = 0
    if progress is not None:
        progress(0, total)
    while True:
        with instance.db.session() as session:
            rows = session.execute(
                select(
                    EscrowedKey.id,
                    EscrowedKey.serial,
                    EscrowedKey.owner_email,
                    EscrowedKey.spki_sha256,
                    EscrowedKey.krs_key_id,
                    EscrowedKey.wrap,
                    EscrowedKey.wrapped_key,
                )
                .where(_needs_rewrap(transport), EscrowedKey.id > last_id)
                .order_by(EscrowedKey.id)
                .limit(batch)
            ).all()
        if not rows:
            break
        if before_batch is not None:
            before_batch(done)
        result = rewrap(
            service,
            [RewrapItem(r.serial, r.spki_sha256, r.wrapped_key) for r in rows],
            wrap=transport.wrap,
            actor=actor,
        )
        if result.key_id != transport.key_id:
            raise ConfigError(
                "the recovery service's transport key changed during the rewrap: run "
                "'mailpki keys rewrap' again"
            )
        with instance.db.transaction() as session:
            events: list[tuple[str, dict[str, object]]] = []
            for row, wrapped in zip(rows, result.wrapped_keys, strict=True):
                changed = session.execute(
                    update(EscrowedKey)
                    .where(EscrowedKey.id == row.id, EscrowedKey.wrapped_key == row.wrapped_key)
                    .values(
                        wrapped_key=wrapped,
                        krs_key_id=result.key_id,
                        wrap=result.wrap,
                        oaep_hash=transport.oaep_hash,
                    )
                )
                if changed.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # changed meanwhile (another rewrap): leave it
                events.append(
                    (
                        "key.rewrapped",
                        {
                            "serial": row.serial,
                            "owner_email": row.owner_email,
                            "from_key_id": row.krs_key_id,
                            "from_wrap": row.wrap,
                            "to_key_id": result.key_id,
                            "wrap": result.wrap,
                        },
                    )
                )
            # One record per block, written with one lock of the log's head.
            instance.audit.append_all(session, events, actor=actor)
            done += len(events)
            instance.audit.checkpoint(session)
        last_id = rows[-1].id
        if progress is not None:
            progress(done, total)
    return RewrapReport(transport.key_id, transport.wrap, learned, total, done)
