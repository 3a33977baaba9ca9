"""Pinning the Key Recovery Service an instance escrows to."""

from __future__ import annotations

import hmac

from mailpki.base.files import write_atomically
from mailpki.errors import ConfigError
from mailpki.instance.instance import RECOVERY_DIR, TRANSPORT_KEY_FILE, Instance
from mailpki.keystore.recovery_block import TransportKey
from mailpki.recovery.client import HttpRecoveryClient


def connect_remote(instance: Instance, *, url: str, service_id: str, actor: str) -> None:
    """Fetch the service's transport key, check it against the id given out of band,
    pin it, and send recoveries to `url` from now on. Keys escrowed to the embedded
    service stay recoverable only there: keep its home."""
    info = HttpRecoveryClient(url).info()
    try:
        key = TransportKey.from_pem(str(info["transport_key"]).encode(), str(info["oaep_hash"]))
    except KeyError:
        raise ConfigError(f"{url} did not answer like a mailpki recovery service") from None
    if not hmac.compare_digest(key.key_id, service_id):
        raise ConfigError(
            f"the service at {url} has id {key.key_id}, not the {service_id} you gave: "
            "not pinning it (check the id with whoever runs the service)"
        )
    (instance.home / RECOVERY_DIR).mkdir(mode=0o755, exist_ok=True)
    old_id = str(instance.config.get("recovery.service_id"))
    write_atomically(instance.home / RECOVERY_DIR / TRANSPORT_KEY_FILE, key.to_pem())
    instance.config.set("recovery.oaep_hash", key.oaep_hash)
    instance.set_config("recovery.service_id", key.key_id, actor=actor)
    instance.set_config("recovery.url", url, actor=actor)
    if old_id and old_id != key.key_id:
        instance.key_manager.clear_pool()  # pooled keys were escrowed to the old service
