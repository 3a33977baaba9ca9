"""Where an instance keeps its files in its home folder, and opening its configuration.

Light on purpose (no cryptography, no SQLAlchemy): commands that only read the
configuration and the database start from here, not from `instance.instance`.
"""

from __future__ import annotations

from pathlib import Path

from mailpki.errors import InstanceError
from mailpki.instance.config import Config

CA_DIR = "ca"
KEYS_DIR = "keys"
PROFILES_DIR = "profiles"
AUDIT_PUBLIC_KEY = "audit-key.pub.pem"
RECOVERY_DIR = "recovery"
TRANSPORT_KEY_FILE = "transport.pub.pem"
TRANSPORT_MLKEM_KEY_FILE = "transport-mlkem.pub.pem"
CA_FILES = {"root": "root.pem", "issuing": "issuing.pem", "ocsp": "ocsp-responder.pem"}


def issuing_file(generation: int) -> str:
    """The certificate file of an issuing CA generation (1 is CA_FILES["issuing"])."""
    return CA_FILES["issuing"] if generation == 1 else f"issuing-g{generation}.pem"


def responder_file(generation: int) -> str:
    """The OCSP responder certificate signed by an issuing CA generation."""
    return CA_FILES["ocsp"] if generation == 1 else f"ocsp-responder-g{generation}.pem"


THEME_DIR = "theme"  # the instance's own pages, stylesheet and mail templates


def load_initialised(home: Path) -> Config:
    """The configuration of an instance that `mailpki init` finished (it has its CA)."""
    config = Config.load(home)
    if not (config.home / CA_DIR / CA_FILES["issuing"]).is_file():
        raise InstanceError(
            f"{home} has a configuration but no CA; was 'mailpki init' interrupted?"
        )
    return config
