"""Where CA private keys live: encrypted files on disk, or a PKCS#11 token.

Both stores implement the small `KeyStore` protocol; the rest of the CA only ever
sees a `CAPrivateKey`, which cryptography accepts for signing certificates, CRLs
and OCSP responses whether the key is in memory or in a token (see `pkcs11.py`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

from asn1crypto import algos, core, keys
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from mailpki.base.pem import require_single_block
from mailpki.errors import InputError, KeyStoreError
from mailpki.keystore.key_types import (
    KEY_TYPES,
    KEY_USAGES,
    KeyType,
    KeyUsage,
)

CAPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

RSA_SIZES: dict[str, int] = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}
EC_CURVES: dict[str, type[ec.EllipticCurve]] = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}

# A label becomes a file name (and a token object label): this pattern keeps it from
# escaping the key directory ('../x', '/etc/x', 'a/b') and from clashing with our
# hidden temp files.
_LABEL_RE = re.compile(r"[a-z0-9-]{1,64}")

# OWASP 2023 figure for PBKDF2-HMAC-SHA256. cryptography's BestAvailableEncryption
# uses the same PBES2/AES-256-CBC scheme but only 2,048 iterations, which is weak
# for a CA key whose file may be copied to backups; 600k costs ~60 ms per load.
PBKDF2_ITERATIONS = 600_000


def parse_key_type(text: str) -> KeyType:
    """Return `text` as a KeyType, or raise InputError listing the choices."""
    value = text.strip().lower()
    if value not in KEY_TYPES:
        raise InputError(f"unknown key type {text!r}: choose one of {', '.join(KEY_TYPES)}")
    return cast(KeyType, value)


def generate_private_key(key_type: KeyType) -> CAPrivateKey:
    """Generate a key pair in software (in this process's memory)."""
    if key_type in RSA_SIZES:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_SIZES[key_type])
    if key_type in EC_CURVES:
        return ec.generate_private_key(EC_CURVES[key_type]())
    raise InputError(f"unknown key type {key_type!r}: choose one of {', '.join(KEY_TYPES)}")


def key_type_of(key: CAPrivateKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> KeyType:
    """The KeyType of a key, or InputError if mailpki does not use that kind of key."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        name = f"rsa{key.key_size}"
        if name in RSA_SIZES:
            return cast(KeyType, name)
        raise InputError(
            f"RSA key of {key.key_size} bits is not supported: use 2048, 3072 or 4096 bits"
        )
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        for name, curve in EC_CURVES.items():
            if isinstance(key.curve, curve):
                return cast(KeyType, name)
        raise InputError(f"EC curve {key.curve.name} is not supported: use P-256 or P-384")
    raise InputError("only RSA and EC (P-256, P-384) keys are supported")


def validate_usage(key_type: KeyType, usage: KeyUsage) -> KeyUsage:
    """Return `usage` if keys of `key_type` can have it, else raise InputError."""
    if usage not in KEY_USAGES:
        raise InputError(f"unknown key usage {usage!r}: choose one of {', '.join(KEY_USAGES)}")
    if usage == "decrypt" and key_type not in RSA_SIZES:
        # Decryption here means RSA-OAEP; an EC key would need ECDH, which we do not do.
        raise InputError(
            f"a {key_type} key cannot be a decryption key: use rsa2048, rsa3072 or rsa4096"
        )
    return usage


def validate_label(label: str) -> str:
    """Return `label` if it is a safe key label ([a-z0-9-]{1,64}), else raise InputError."""
    if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
        raise InputError(
            f"invalid key label {label!r}: use 1 to 64 characters from a-z, 0-9 and '-'"
        )
    return label


@runtime_checkable
class KeyStore(Protocol):
    """A place CA private keys are created in and loaded from, by label."""

    def generate(self, label: str, key_type: KeyType, *, usage: KeyUsage = "sign") -> CAPrivateKey:
        """Create a new key under `label`; KeyStoreError if the label is taken.

        `usage="decrypt"` (RSA only, else InputError) makes an RSA-OAEP decryption key.
        """
        ...

    def load(self, label: str) -> CAPrivateKey:
        """Load the key; KeyStoreError if absent or it cannot be unlocked."""
        ...

    def exists(self, label: str) -> bool: ...

    def remove(self, label: str) -> None:
        """Destroy the key; KeyStoreError if absent."""
        ...

    def export_pem(self, label: str, passphrase: bytes) -> bytes:
        """The key as encrypted PKCS#8 PEM (backups); KeyStoreError if not extractable."""
        ...

    def import_pem(self, label: str, pem: bytes, passphrase: bytes) -> CAPrivateKey:
        """Store an existing PEM key under `label`."""
        ...

    def describe(self) -> str:
        """One line for people: where the keys are."""
        ...


def encrypt_pkcs8_pem(
    key: CAPrivateKey, passphrase: bytes, iterations: int = PBKDF2_ITERATIONS
) -> bytes:
    """Encrypted PKCS#8 PEM (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC).

    Same scheme OpenSSL 3 writes by default, so `openssl pkey` reads it, but with a
    real iteration count (see PBKDF2_ITERATIONS).
    """
    if not passphrase:
        raise KeyStoreError("refusing to write a private key with an empty passphrase")
    plain = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = secrets.token_bytes(16)
    iv = secrets.token_bytes(16)
    kek = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    info = keys.EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": {
                "algorithm": "pbes2",
                "parameters": {
                    "key_derivation_func": {
                        "algorithm": "pbkdf2",
                        "parameters": {
                            "salt": algos.Pbkdf2Salt(name="specified", value=salt),
                            "iteration_count": iterations,
                            "prf": {"algorithm": "sha256", "parameters": core.Null()},
                        },
                    },
                    "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv},
                },
            },
            "encrypted_data": ciphertext,
        }
    )
    der: bytes = info.dump()
    return _pem_armor("ENCRYPTED PRIVATE KEY", der)


def _pem_armor(kind: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        f"-----BEGIN {kind}-----\n".encode()
        + b"\n".join(lines)
        + f"\n-----END {kind}-----\n".encode()
    )


_KEY_LABELS = ("ENCRYPTED PRIVATE KEY", "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


def load_pem_key(pem: bytes, passphrase: bytes | None) -> CAPrivateKey:
    """Parse a PEM private key; InputError for garbage, wrong passphrase or not a CA key.

    An empty or None passphrase means the PEM is expected to be unencrypted.
    """
    require_single_block(pem, _KEY_LABELS, "private key")
    password = passphrase or None
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except TypeError as exc:
        # cryptography says TypeError for "encrypted but no password" and the reverse.
        if password is None:
            raise InputError("the PEM key is encrypted: give its passphrase") from exc
        raise InputError(
            "the PEM key is not encrypted: import it with an empty passphrase"
        ) from exc
    except ValueError as exc:
        if password is not None and b"ENCRYPTED" in pem:
            raise InputError("cannot decrypt the PEM key: wrong passphrase?") from exc
        raise InputError(
            "not a PEM private key (expected '-----BEGIN ... PRIVATE KEY-----')"
        ) from exc
    except Exception as exc:  # the Rust parser raises other types on odd input
        raise InputError(f"not a usable PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise InputError(f"a {type(key).__name__} cannot be a CA key: use RSA or EC (P-256, P-384)")
    key_type_of(key)  # refuse odd sizes and curves with a clear message
    return key


def read_passphrase(file: Path | None, env: str | None) -> bytes:
    """The key store passphrase, from a file or from the environment variable named `env`.

    The file wins when both are configured, so an operator can override a service's
    environment without editing it. One trailing newline (as editors add) is removed.
    """
    if file is not None:
        try:
            data = Path(file).read_bytes()
        except OSError as exc:
            raise KeyStoreError(
                f"cannot read the key passphrase file {file}: {exc.strerror or exc}"
            ) from exc
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        if not data:
            raise KeyStoreError(f"the key passphrase file {file} is empty")
        return data
    if env:
        value = os.environ.get(env)
        if value is None:
            raise KeyStoreError(f"the environment variable {env} (key passphrase) is not set")
        if not value:
            raise KeyStoreError(f"the environment variable {env} (key passphrase) is empty")
        return os.fsencode(value)
    raise KeyStoreError(
        "no key passphrase configured: set a passphrase file or an environment variable name"
    )


class FileKeyStore:
    """CA keys at rest as encrypted PKCS#8 PEM files <dir>/<label>.pem (0600, dir 0700)."""

    def __init__(self, directory: Path, passphrase: bytes) -> None:
        if not passphrase:
            raise KeyStoreError("the file key store needs a non-empty passphrase")
        self.directory = Path(directory)
        self._passphrase = bytes(passphrase)

    def __repr__(self) -> str:  # never show the passphrase
        return f"FileKeyStore({str(self.directory)!r})"

    def describe(self) -> str:
        return f"encrypted files in {self.directory}"

    def path_for(self, label: str) -> Path:
        return self.directory / f"{validate_label(label)}.pem"

    def exists(self, label: str) -> bool:
        return self.path_for(label).is_file()

    def generate(self, label: str, key_type: KeyType, *, usage: KeyUsage = "sign") -> CAPrivateKey:
        # A key in memory can do anything; usage is only checked, to fail here as
        # the token store would, not later when the key is used.
        validate_usage(key_type, usage)
        path = self.path_for(label)
        if path.exists():
            raise KeyStoreError(f"a key labelled {label!r} already exists in {self.directory}")
        key = generate_private_key(key_type)
        self._write_new(path, encrypt_pkcs8_pem(key, self._passphrase))
        return key

    def load(self, label: str) -> CAPrivateKey:
        path = self.path_for(label)
        try:
            pem = path.read_bytes()
        except FileNotFoundError as exc:
            raise KeyStoreError(f"no key labelled {label!r} in {self.directory}") from exc
        except OSError as exc:
            raise KeyStoreError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
        try:
            return load_pem_key(pem, self._passphrase)
        except InputError as exc:
            raise KeyStoreError(
                f"cannot unlock key {label!r} in {self.directory}: wrong passphrase or "
                f"damaged file ({exc})"
            ) from exc

    def remove(self, label: str) -> None:
        path = self.path_for(label)
        try:
            path.unlink()
        except FileNotFoundError as exc:
            raise KeyStoreError(f"no key labelled {label!r} in {self.directory}") from exc
        _fsync_dir(self.directory)

    def export_pem(self, label: str, passphrase: bytes) -> bytes:
        if not passphrase:
            raise KeyStoreError("refusing to export a private key with an empty passphrase")
        return encrypt_pkcs8_pem(self.load(label), passphrase)

    def import_pem(self, label: str, pem: bytes, passphrase: bytes) -> CAPrivateKey:
        path = self.path_for(label)
        key = load_pem_key(pem, passphrase)
        if path.exists():
            raise KeyStoreError(f"a key labelled {label!r} already exists in {self.directory}")
        self._write_new(path, encrypt_pkcs8_pem(key, self._passphrase))
        return key

    def _write_new(self, path: Path, data: bytes) -> None:
        """Write `data` to `path` atomically, never replacing an existing key.

        Temp file in the same directory + fsync, then link(2) to the final name: a
        crash leaves either no key or the whole key, and link (unlike rename) fails
        if another writer got there first instead of silently overwriting a CA key.
        """
        self._ensure_dir()
        fd, tmp_name = tempfile.mkstemp(dir=self.directory, prefix=f".{path.stem}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise KeyStoreError(
                    f"a key labelled {path.stem!r} already exists in {self.directory}"
                ) from exc
            except OSError as exc:
                raise KeyStoreError(f"cannot write key file {path}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(self.directory)

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask, and the dir may predate us.
            os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise KeyStoreError(
                f"cannot create key directory {self.directory}: {exc.strerror or exc}"
            ) from exc


def _fsync_dir(directory: Path) -> None:
    # Make the new/removed directory entry durable, not just the file contents.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
