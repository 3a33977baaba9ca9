"""Transport key rotation and the re-wrapping of blocks, inside the Key Recovery Service.

`rotate_transport_key` adds a key generation (RSA + ML-KEM-768); the older ones stay
for unwrapping. `rewrap` takes wrapped keys (never a whole block: the service never
sees an escrowed private key, not even encrypted), opens each with whichever
generation it was made for, checks it is bound to the public key the caller names,
and wraps the same payload to the newest generation. The AES key exists in the
clear only in this process's memory, for the time of one wrap; one `key.rewrapped`
record per block goes into the service's own log, in the same transaction.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from mailpki.errors import EscrowError, InputError
from mailpki.keystore.keys import parse_key_type
from mailpki.keystore.recovery_block import WRAPS, split_unwrapped
from mailpki.recovery.service import RecoveryService
from mailpki.recovery.transport import Generation

MAX_BATCH = 10_000


@dataclass(frozen=True)
class RewrapItem:
    """One block's wrapped key, with what the caller says it is bound to."""

    serial: str
    spki_sha256: str
    wrapped_key: bytes


@dataclass(frozen=True)
class Rewrapped:
    """The new wrapped keys, in the order asked, and the generation they are for."""

    key_id: str
    wrap: str
    wrapped_keys: list[bytes]


def rotate_transport_key(service: RecoveryService, *, actor: str) -> Generation:
    """A new transport key generation, listed last; audited as `transport_key.rotated`."""
    transport = service.transport
    old = transport.current
    generation = transport.make_generation(
        str(service.config.get("keys.label_prefix")),
        parse_key_type(str(service.config.get("transport.key_type"))),
        first=False,
    )
    try:
        with service.db.transaction() as session:
            service.audit.append(
                session,
                "transport_key.rotated",
                actor=actor,
                data={
                    "old_key_id": old.key_id,
                    "new_key_id": generation.key_id,
                    "rsa_label": generation.rsa_label,
                    "mlkem_label": generation.mlkem_label,
                    "generations": len(transport.generations) + 1,
                },
            )
            service.audit.checkpoint(session)
            transport.save([*transport.generations, generation])  # the commit point
    except BaseException:
        if transport.current.key_id != generation.key_id:
            transport.remove_keys(generation)
        raise
    return generation


def rewrap(
    service: RecoveryService, items: Sequence[RewrapItem], *, wrap: str, actor: str
) -> Rewrapped:
    """Each item's wrapped key, re-wrapped to the newest generation as `wrap` says.

    All or nothing: EscrowError (naming the serial) if one does not open or is bound
    to another key than the caller says; then nothing is recorded.
    """
    if wrap not in WRAPS:
        raise InputError(f"unknown wrap {wrap!r}: choose one of {', '.join(WRAPS)}")
    if len(items) > MAX_BATCH:
        raise InputError(f"at most {MAX_BATCH:,} blocks per rewrap batch")
    transport = service.transport
    target = transport.current
    results: list[bytes] = []
    records: list[dict[str, str]] = []
    for item in items:
        try:
            opened = transport.unwrap(item.wrapped_key)
            _, bound_to = split_unwrapped(opened.payload)
        except EscrowError as exc:
            raise EscrowError(f"the block of {item.serial} does not open: {exc}") from None
        if not hmac.compare_digest(bound_to, item.spki_sha256):
            raise EscrowError(
                f"the block of {item.serial} is bound to another key than the one named"
            )
        results.append(transport.wrap(opened.payload, wrap))
        records.append(
            {
                "serial": item.serial,
                "spki_sha256": item.spki_sha256,
                "from_key_id": opened.key_id,
                "to_key_id": target.key_id,
                "wrap": wrap,
            }
        )
    with service.db.transaction() as session:
        # One lock of the log's head and one flush for the whole batch.
        service.audit.append_all(
            session, [("key.rewrapped", data) for data in records], actor=actor
        )
        service.audit.checkpoint(session)
    return Rewrapped(target.key_id, wrap, results)
