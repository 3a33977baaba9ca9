"""The Key Recovery Service's transport keys: every generation, the newest wraps.

A generation is an RSA transport key (encrypted file or PKCS#11 token) and, from the
hybrid format on, an ML-KEM-768 key (always an encrypted file: see
`keystore/mlkem_keys.py`). `recovery-service rotate-key` adds a generation; older
ones are kept so that blocks wrapped to them still unwrap, until `keys rewrap` has
moved every block to the newest one.

The list lives in `transport-keys.json` in the service's home, newest last; a home
made before key rotation existed has no such file and one generation: the RSA key
`<prefix>-transport` of `transport.pub.pem`. A generation's id is SHA-256 of its RSA
SubjectPublicKeyInfo (DER), followed by that of the ML-KEM key when it has one (see
`recovery_block.generation_id`): what an instance pins, and what blocks name.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, rsa

from mailpki.base.files import write_atomically
from mailpki.errors import ConfigError, EscrowError, InputError, KeyStoreError
from mailpki.keystore.hybrid_wrap import (
    RSA_CIPHERTEXT_SIZES,
    hybrid_unwrap,
    is_hybrid,
    parse_hybrid,
)
from mailpki.keystore.key_types import KeyType
from mailpki.keystore.keys import KeyStore
from mailpki.keystore.mlkem_keys import MLKEMKeyFiles, load_mlkem_public_pem, mlkem_public_pem
from mailpki.keystore.recovery_block import (
    WRAP_HYBRID,
    TransportKey,
    generation_id,
    oaep,
    wrap_key,
)

REGISTRY = "transport-keys.json"
REGISTRY_FORMAT = "mailpki-krs-transport-keys/1"
TRANSPORT_PUBLIC = "transport.pub.pem"
TRANSPORT_MLKEM_PUBLIC = "transport-mlkem.pub.pem"


@dataclass(frozen=True)
class Generation:
    """One transport key generation, as the registry lists it."""

    key_id: str
    rsa_label: str
    mlkem_label: str | None
    rsa_public_pem: bytes
    mlkem_public_pem: bytes | None
    created_at: str

    def public(self, oaep_hash: str, wrap: str) -> TransportKey:
        key = serialization.load_pem_public_key(self.rsa_public_pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigError("a transport key in the registry is not RSA")
        ml = None if self.mlkem_public_pem is None else load_mlkem_public_pem(self.mlkem_public_pem)
        return TransportKey(key, oaep_hash, ml, wrap)

    def to_json(self) -> dict[str, str | None]:
        return {
            "key_id": self.key_id,
            "rsa_label": self.rsa_label,
            "mlkem_label": self.mlkem_label,
            "rsa_public": self.rsa_public_pem.decode(),
            "mlkem_public": None
            if self.mlkem_public_pem is None
            else self.mlkem_public_pem.decode(),
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, item: dict[str, str | None]) -> Generation:
        try:
            mlkem_pem = item["mlkem_public"]
            return cls(
                key_id=str(item["key_id"]),
                rsa_label=str(item["rsa_label"]),
                mlkem_label=None if item["mlkem_label"] is None else str(item["mlkem_label"]),
                rsa_public_pem=str(item["rsa_public"]).encode(),
                mlkem_public_pem=None if mlkem_pem is None else mlkem_pem.encode(),
                created_at=str(item["created_at"]),
            )
        except (KeyError, TypeError):
            raise ConfigError(f"{REGISTRY} is damaged (a generation lacks a field)") from None


@dataclass(frozen=True)
class Unwrapped:
    """A block's payload (AES key + bound hash) and the generation that opened it."""

    payload: bytes
    key_id: str


class TransportKeys:
    """All generations of a service's transport keys; unwraps with any, wraps to the newest."""

    def __init__(
        self,
        home: Path,
        keys: KeyStore,
        mlkem_files: Callable[[], MLKEMKeyFiles],
        *,
        oaep_hash: str,
        legacy_label: str,
    ) -> None:
        self.home = home
        self._keys = keys
        self._mlkem_files_factory = mlkem_files
        self._mlkem_files: MLKEMKeyFiles | None = None
        self.oaep_hash = oaep_hash
        self._legacy_label = legacy_label
        self._rsa: dict[str, rsa.RSAPrivateKey] = {}
        self._mlkem: dict[str, mlkem.MLKEM768PrivateKey] = {}
        self._generations: list[Generation] | None = None
        self._sizes: dict[str, int] = {}

    # -- the list -----------------------------------------------------------------------

    @property
    def generations(self) -> list[Generation]:
        """Oldest first (read on first use: `init` makes the first one)."""
        if self._generations is None:
            self._generations = self._load()
        return self._generations

    @property
    def current(self) -> Generation:
        return self.generations[-1]

    def by_id(self, key_id: str) -> Generation | None:
        return next((g for g in self.generations if g.key_id == key_id), None)

    def _load(self) -> list[Generation]:
        path = self.home / REGISTRY
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return [self._legacy()]
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != REGISTRY_FORMAT:
            raise ConfigError(f"{path} is not a mailpki transport key list")
        items = document.get("generations")
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{path} lists no transport key")
        return [Generation.from_json(item) for item in items]

    def _legacy(self) -> Generation:
        path = self.home / TRANSPORT_PUBLIC
        try:
            pem = path.read_bytes()
        except OSError:
            raise ConfigError(
                f"{self.home} has no transport key; was 'recovery-service init' interrupted?"
            ) from None
        key = serialization.load_pem_public_key(pem)
        return Generation(
            key_id=generation_id(key, None),
            rsa_label=self._legacy_label,
            mlkem_label=None,
            rsa_public_pem=pem,
            mlkem_public_pem=None,
            created_at="",
        )

    def save(self, generations: list[Generation]) -> None:
        """Write the list (the commit point of a rotation), then the current public keys."""
        document = {"format": REGISTRY_FORMAT, "generations": [g.to_json() for g in generations]}
        write_atomically(self.home / REGISTRY, json.dumps(document, indent=1).encode())
        self._generations = list(generations)
        newest = generations[-1]
        write_atomically(self.home / TRANSPORT_PUBLIC, newest.rsa_public_pem)
        if newest.mlkem_public_pem is not None:
            write_atomically(self.home / TRANSPORT_MLKEM_PUBLIC, newest.mlkem_public_pem)

    # -- making keys --------------------------------------------------------------------

    def make_generation(self, prefix: str, key_type: KeyType, *, first: bool) -> Generation:
        """New RSA and ML-KEM keys under fresh labels, self-tested; not yet listed.

        The first generation takes the labels a service always had (`<prefix>-transport`);
        later ones a random suffix, so keys left by an interrupted rotation never clash.
        """
        rsa_label = f"{prefix}-transport" if first else f"{prefix}-transport-{secrets.token_hex(4)}"
        mlkem_label = f"{rsa_label}-mlkem"
        private = self._keys.generate(rsa_label, key_type, usage="decrypt")
        if not isinstance(private, rsa.RSAPrivateKey):
            raise KeyStoreError("the transport key must be an RSA key")
        self_test(private, self.oaep_hash)
        ml_private = self.mlkem_files.generate(mlkem_label)
        public = private.public_key()
        generation = Generation(
            key_id=generation_id(public, ml_private.public_key()),
            rsa_label=rsa_label,
            mlkem_label=mlkem_label,
            rsa_public_pem=public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            mlkem_public_pem=mlkem_public_pem(ml_private.public_key()),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._rsa[rsa_label] = private
        self._mlkem[mlkem_label] = ml_private
        # The full hybrid round trip, before anything depends on these keys.
        probe = os.urandom(64)
        if (
            self.unwrap(
                wrap_key(probe, generation.public(self.oaep_hash, WRAP_HYBRID)), [generation]
            ).payload
            != probe
        ):
            raise KeyStoreError("the new transport keys failed their hybrid self-test")
        return generation

    def remove_keys(self, generation: Generation) -> None:
        """Best-effort removal of an unlisted generation's keys (a failed rotation)."""
        try:
            if self._keys.exists(generation.rsa_label):
                self._keys.remove(generation.rsa_label)
            label = generation.mlkem_label
            if label is not None and self.mlkem_files.exists(label):
                self.mlkem_files.remove(label)
        except (KeyStoreError, OSError):
            pass

    @property
    def mlkem_files(self) -> MLKEMKeyFiles:
        if self._mlkem_files is None:
            self._mlkem_files = self._mlkem_files_factory()
        return self._mlkem_files

    # -- using keys ---------------------------------------------------------------------

    def check_wrapped(self, wrapped: bytes) -> None:
        """InputError unless `wrapped` could be a block's wrapped key for this service."""
        if is_hybrid(wrapped):
            try:
                parsed = parse_hybrid(wrapped)
            except EscrowError as exc:
                raise InputError(f"'wrapped_key': {exc}") from None
            if self.by_id(parsed.key_id_hex) is None:
                raise InputError("'wrapped_key' is wrapped to a key this service does not have")
            return
        sizes = {self._rsa_size(g) for g in self.generations}
        if len(wrapped) not in sizes:
            raise InputError("'wrapped_key' does not fit this service's transport key")

    def unwrap(self, wrapped: bytes, generations: list[Generation] | None = None) -> Unwrapped:
        """The payload of a wrapped key, in either format; EscrowError if it does not open."""
        candidates = self.generations if generations is None else generations
        if is_hybrid(wrapped):
            parsed = parse_hybrid(wrapped)
            generation = next((g for g in candidates if g.key_id == parsed.key_id_hex), None)
            if generation is None:
                raise EscrowError(
                    "the wrapped key names a transport key this service does not have"
                )
            if generation.mlkem_label is None:
                raise EscrowError("a hybrid wrap names a transport key without an ML-KEM key")
            private = self._rsa_key(generation)
            payload = hybrid_unwrap(
                parsed,
                rsa_decrypt=lambda ct: private.decrypt(ct, oaep(self.oaep_hash)),
                mlkem_key=self._mlkem_key(generation.mlkem_label),
            )
            return Unwrapped(payload, generation.key_id)
        if len(wrapped) not in RSA_CIPHERTEXT_SIZES:
            raise EscrowError("the wrapped key is neither RSA-OAEP nor a hybrid wrap (truncated?)")
        # The first format names no key: try the generations, newest first.
        for generation in reversed(candidates):
            if self._rsa_size(generation) != len(wrapped):
                continue
            try:
                plain = self._rsa_key(generation).decrypt(wrapped, oaep(self.oaep_hash))
            except ValueError:
                continue
            return Unwrapped(plain, generation.key_id)
        raise EscrowError("the wrapped key does not decrypt with any of this service's keys")

    def wrap(self, payload: bytes, wrap: str) -> bytes:
        return wrap_key(payload, self.current.public(self.oaep_hash, wrap))

    def _rsa_key(self, generation: Generation) -> rsa.RSAPrivateKey:
        key = self._rsa.get(generation.rsa_label)
        if key is None:
            loaded = self._keys.load(generation.rsa_label)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise KeyStoreError(f"the transport key {generation.rsa_label!r} is not RSA")
            key = self._rsa[generation.rsa_label] = loaded
        return key

    def _mlkem_key(self, label: str) -> mlkem.MLKEM768PrivateKey:
        key = self._mlkem.get(label)
        if key is None:
            key = self._mlkem[label] = self.mlkem_files.load(label)
        return key

    def _rsa_size(self, generation: Generation) -> int:
        size = self._sizes.get(generation.key_id)
        if size is None:
            key = serialization.load_pem_public_key(generation.rsa_public_pem)
            assert isinstance(key, rsa.RSAPublicKey)
            size = self._sizes[generation.key_id] = key.key_size // 8
        return size


def self_test(transport: rsa.RSAPrivateKey, oaep_hash: str) -> None:
    """Unwrap once now: a token that cannot do this OAEP hash must fail here, not in a
    recovery."""
    probe = os.urandom(64)
    wrapped = transport.public_key().encrypt(probe, oaep(oaep_hash))
    try:
        ok = transport.decrypt(wrapped, oaep(oaep_hash)) == probe
    except (ValueError, KeyStoreError) as exc:
        raise KeyStoreError(
            f"the transport key cannot unwrap with RSA-OAEP/{oaep_hash}: {exc}"
        ) from None
    if not ok:
        raise KeyStoreError("the transport key's unwrap self-test gave a wrong result")
