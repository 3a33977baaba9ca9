"""The key store a settings file describes (`keys.*`), for the instance and the KRS alike."""

from __future__ import annotations

from pathlib import Path

from mailpki.base.settings import SettingsFile
from mailpki.errors import ConfigError
from mailpki.keystore.keys import FileKeyStore, KeyStore, read_passphrase


def store_secret(config: SettingsFile) -> bytes:
    """What unlocks the store: the token PIN, or the passphrase of the key files."""
    if config.get("keys.backend") == "pkcs11":
        if not config.get("keys.pkcs11_pin_file"):
            raise ConfigError("keys.backend is pkcs11 but keys.pkcs11_pin_file is not set")
        return read_passphrase(config.path_of("keys.pkcs11_pin_file"), None)
    env = str(config.get("keys.passphrase_env")) or None
    file = config.path_of("keys.passphrase_file") if not env else None
    return read_passphrase(file, env)


def open_key_store(config: SettingsFile, keys_dir: Path) -> KeyStore:
    """A PKCS#11 token (keys.pkcs11_*) or encrypted files in `keys_dir`."""
    if config.get("keys.backend") == "pkcs11":
        from mailpki.keystore.pkcs11 import PKCS11KeyStore

        module = str(config.get("keys.pkcs11_module"))
        token = str(config.get("keys.pkcs11_token"))
        if not (module and token):
            raise ConfigError(
                "keys.backend is pkcs11 but keys.pkcs11_module or keys.pkcs11_token is not set"
            )
        return PKCS11KeyStore(Path(module), token, store_secret(config))
    return FileKeyStore(keys_dir, store_secret(config))
