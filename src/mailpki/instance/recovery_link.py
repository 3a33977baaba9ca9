"""Pinning the Key Recovery Service an instance escrows to, and its newer keys."""

from __future__ import annotations

import hmac
from typing import Any

from mailpki.base.files import write_atomically
from mailpki.errors import ConfigError
from mailpki.instance.instance import Instance
from mailpki.instance.layout import RECOVERY_DIR, TRANSPORT_KEY_FILE, TRANSPORT_MLKEM_KEY_FILE
from mailpki.keystore.recovery_block import TransportKey
from mailpki.recovery.client import HttpRecoveryClient


def transport_key_of(info: dict[str, Any], *, wrap: str, where: str) -> TransportKey:
    """The newest transport key(s) a service's `info` announces."""
    try:
        mlkem = info.get("mlkem_key")
        return TransportKey.from_pem(
            str(info["transport_key"]).encode(),
            str(info["oaep_hash"]),
            mlkem_pem=None if mlkem is None else str(mlkem).encode(),
            wrap=wrap if mlkem is not None else "rsa-oaep",
        )
    except KeyError:
        raise ConfigError(f"{where} did not answer like a mailpki recovery service") from None


def pin(instance: Instance, key: TransportKey, *, service_id: str, actor: str) -> bool:
    """Pin `key` (and the service's lasting id); True if the pinned key changed.

    Pooled keys were escrowed to the old key: they are dropped when it changes."""
    old_key_id = str(instance.config.get("recovery.transport_key_id")) or str(
        instance.config.get("recovery.service_id")
    )
    folder = instance.home / RECOVERY_DIR
    folder.mkdir(mode=0o755, exist_ok=True)
    write_atomically(folder / TRANSPORT_KEY_FILE, key.to_pem())
    mlkem_pem = key.mlkem_pem()
    if mlkem_pem is not None:
        write_atomically(folder / TRANSPORT_MLKEM_KEY_FILE, mlkem_pem)
    else:
        (folder / TRANSPORT_MLKEM_KEY_FILE).unlink(missing_ok=True)
    instance.config.set("recovery.oaep_hash", key.oaep_hash)
    instance.config.save()
    if str(instance.config.get("recovery.service_id")) != service_id:
        instance.set_config("recovery.service_id", service_id, actor=actor)
    new_key_id = "" if key.key_id == service_id else key.key_id
    if str(instance.config.get("recovery.transport_key_id")) != new_key_id:
        instance.set_config("recovery.transport_key_id", new_key_id, actor=actor)
    instance.__dict__.pop("transport_key", None)
    instance.__dict__.pop("key_manager", None)
    changed = old_key_id != key.key_id
    if changed:
        instance.key_manager.clear_pool()
    return changed


def connect_remote(instance: Instance, *, url: str, service_id: str, actor: str) -> None:
    """Fetch the service's transport key(s), check them against the id given out of
    band (the service id, or after a rotation the newest key id `rotate-key` printed),
    pin them, and send recoveries to `url` from now on. Keys escrowed to the embedded
    service stay recoverable only there: keep its home."""
    info = HttpRecoveryClient(url).info()
    key = transport_key_of(info, wrap=str(instance.config.get("recovery.wrap")), where=url)
    if not hmac.compare_digest(key.key_id, service_id):
        raise ConfigError(
            f"the service at {url} has id {key.key_id}, not the {service_id} you gave: "
            "not pinning it (check the id with whoever runs the service)"
        )
    lasting_id = str(info.get("service_id") or key.key_id)
    pin(instance, key, service_id=lasting_id, actor=actor)
    instance.set_config("recovery.url", url, actor=actor)
