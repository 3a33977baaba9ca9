"""CA keys inside a PKCS#11 token (an HSM, or SoftHSM2 in tests).

Keys are generated in the token as sensitive, non-extractable signing keys (or, for
the Key Recovery Service's transport key, RSA decryption keys) and never leave it.
`load` returns an object that *is* an `rsa.RSAPrivateKey` /
`ec.EllipticCurvePrivateKey` to cryptography, so the x509 builders, CRLs and OCSP
responses sign with it unchanged; only `sign()` and `decrypt()` go to the token.

PKCS#11 logs in per application and token, not per session: a second C_Login on
the same token fails (USER_ALREADY_LOGGED_IN) and C_Logout from any session logs
out all of them. So stores for the same module and token share one logged-in
session per process, reference-counted, with one lock around every token call.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
from pathlib import Path
from typing import Any, NoReturn, Self

import pkcs11
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import _serialization, hashes
from cryptography.hazmat.primitives._asymmetric import AsymmetricPadding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.utils import Buffer
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11exc

from mailpki.errors import KeyStoreError
from mailpki.keystore.key_types import KeyType as CAKeyType
from mailpki.keystore.key_types import KeyUsage
from mailpki.keystore.keys import EC_CURVES, RSA_SIZES, CAPrivateKey, validate_label, validate_usage

NOT_EXTRACTABLE = "keys in a PKCS#11 token are not extractable; back up the token instead"

# DER DigestInfo prefixes (RFC 8017 section 9.2, note 1): CKM_RSA_PKCS signs exactly
# what it is given, so for PKCS#1 v1.5 we hash here and prepend the prefix. Hashing
# locally also keeps a 40 MB CRL from being streamed through the token.
_DIGEST_INFO: dict[str, bytes] = {
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_HASH_MECH: dict[str, tuple[Mechanism, pkcs11.MGF]] = {
    "sha224": (Mechanism.SHA224, pkcs11.MGF.SHA224),
    "sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256),
    "sha384": (Mechanism.SHA384, pkcs11.MGF.SHA384),
    "sha512": (Mechanism.SHA512, pkcs11.MGF.SHA512),
}
# RSA-OAEP hash -> (CKA hashAlg, CKG_MGF1_*) for CK_RSA_PKCS_OAEP_PARAMS.
_OAEP_HASH: dict[str, tuple[Mechanism, pkcs11.MGF]] = {
    "sha1": (Mechanism.SHA_1, pkcs11.MGF.SHA1),
    "sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256),
    "sha384": (Mechanism.SHA384, pkcs11.MGF.SHA384),
    "sha512": (Mechanism.SHA512, pkcs11.MGF.SHA512),
}
_CURVE_OIDS: dict[str, str] = {"p256": "1.2.840.10045.3.1.7", "p384": "1.3.132.0.34"}


class _SharedSession:
    """One logged-in R/W session on one token, shared by every store in the process."""

    def __init__(self, key: tuple[str, bytes], session: Any, pin_digest: bytes) -> None:
        self.key = key
        self.session = session
        self.pin_digest = pin_digest
        self.lock = threading.RLock()
        self.refs = 0
        self.closed = False


_SESSIONS: dict[tuple[str, bytes], _SharedSession] = {}
_SESSIONS_LOCK = threading.Lock()


def _pin_digest(pin: str) -> bytes:
    # Keep only a digest of the PIN the shared session was opened with, to check a
    # second store's PIN without a second C_Login (which the token would refuse).
    return hashlib.sha256(pin.encode()).digest()


def _fail(action: str, exc: Exception) -> NoReturn:
    raise KeyStoreError(f"PKCS#11 token error while {action}: {type(exc).__name__} {exc}") from exc


class PKCS11KeyStore:
    """CA keys generated and used inside a PKCS#11 token; implements KeyStore."""

    def __init__(self, module: Path, token_label: str, pin: bytes) -> None:
        self.module = Path(module)
        self.token_label = token_label
        if not self.module.is_file():
            raise KeyStoreError(f"PKCS#11 module {self.module} does not exist")
        if not pin:
            raise KeyStoreError(f"no PIN given for PKCS#11 token {token_label!r}")
        try:
            pin_text = pin.decode("utf-8")  # python-pkcs11 wants str and encodes it itself
        except UnicodeDecodeError as exc:
            raise KeyStoreError("the PKCS#11 PIN is not valid UTF-8") from exc
        try:
            # One path per module: python-pkcs11 keeps one library object per path string,
            # and a second object for the same .so would C_Initialize it twice.
            lib = pkcs11.lib(str(self.module.resolve()))
        except Exception as exc:  # a non-PKCS#11 .so fails in several ways
            raise KeyStoreError(f"cannot load PKCS#11 module {self.module}: {exc}") from exc
        with _SESSIONS_LOCK:
            token = self._find_token(lib)
            key = (str(self.module.resolve()), bytes(token.serial))
            shared = _SESSIONS.get(key)
            if shared is None:
                shared = _SharedSession(key, self._login(token, pin_text), _pin_digest(pin_text))
                _SESSIONS[key] = shared
            elif not hmac.compare_digest(shared.pin_digest, _pin_digest(pin_text)):
                raise KeyStoreError(f"wrong PIN for PKCS#11 token {token_label!r}")
            shared.refs += 1
        self._shared: _SharedSession | None = shared

    def _find_token(self, lib: Any) -> Any:
        try:
            return lib.get_token(token_label=self.token_label)
        except p11exc.NoSuchToken as exc:
            try:
                # An uninitialised slot shows up with an empty label: leave it out.
                labels = sorted(str(t.label) for t in lib.get_tokens() if t.label)
            except p11exc.PKCS11Error:
                labels = []
            found = ", ".join(repr(x) for x in labels) or "none"
            raise KeyStoreError(
                f"no PKCS#11 token labelled {self.token_label!r} in {self.module} "
                f"(tokens found: {found})"
            ) from exc
        except p11exc.MultipleTokensReturned as exc:
            raise KeyStoreError(
                f"several PKCS#11 tokens are labelled {self.token_label!r} in {self.module}"
            ) from exc
        except p11exc.PKCS11Error as exc:
            _fail(f"looking for token {self.token_label!r}", exc)

    def _login(self, token: Any, pin: str) -> Any:
        try:
            return token.open(rw=True, user_pin=pin)
        except (p11exc.PinIncorrect, p11exc.PinLenRange, p11exc.PinInvalid) as exc:
            raise KeyStoreError(f"wrong PIN for PKCS#11 token {self.token_label!r}") from exc
        except p11exc.PinLocked as exc:
            raise KeyStoreError(
                f"the PIN of PKCS#11 token {self.token_label!r} is locked; "
                "unlock it with the SO PIN"
            ) from exc
        except p11exc.UserPinNotInitialized as exc:
            raise KeyStoreError(
                f"PKCS#11 token {self.token_label!r} has no user PIN yet; initialise it"
            ) from exc
        except p11exc.UserAlreadyLoggedIn:
            # Someone else in this process logged in to this token outside mailpki:
            # every new session is already logged in, but the PIN cannot be checked.
            # (python-pkcs11 leaks the session it opened before the failed C_Login.)
            try:
                return token.open(rw=True)
            except p11exc.PKCS11Error as exc2:
                _fail("opening a session", exc2)
        except p11exc.PKCS11Error as exc:
            _fail(f"logging in to token {self.token_label!r}", exc)

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Release this store's share of the session; the last one logs out."""
        shared, self._shared = self._shared, None
        if shared is None:
            return
        with _SESSIONS_LOCK:
            shared.refs -= 1
            if shared.refs > 0:
                return
            _SESSIONS.pop(shared.key, None)
        with shared.lock:
            shared.closed = True
            # The token may be gone already; then there is nothing left to release.
            with contextlib.suppress(p11exc.PKCS11Error):
                shared.session.close()

    def __enter__(self) -> PKCS11KeyStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _session(self) -> _SharedSession:
        if self._shared is None:
            raise KeyStoreError(f"the key store for token {self.token_label!r} is closed")
        return self._shared

    def __repr__(self) -> str:
        return f"PKCS11KeyStore({str(self.module)!r}, {self.token_label!r})"

    def describe(self) -> str:
        return f"PKCS#11 token {self.token_label!r} via {self.module}"

    # -- KeyStore ------------------------------------------------------------------

    def exists(self, label: str) -> bool:
        validate_label(label)
        shared = self._session()
        with shared.lock:
            try:
                return self._find(shared, ObjectClass.PRIVATE_KEY, label=label) is not None
            except p11exc.PKCS11Error as exc:
                _fail(f"looking up key {label!r}", exc)

    def generate(
        self, label: str, key_type: CAKeyType, *, usage: KeyUsage = "sign"
    ) -> CAPrivateKey:
        validate_label(label)
        validate_usage(key_type, usage)
        shared = self._session()
        # A random CKA_ID pairs the private and public objects independently of the
        # label, which operators may see (and tools may edit) in the token.
        key_id = secrets.token_bytes(16)
        # One purpose per key: a decryption key cannot sign, a signing key cannot
        # decrypt, so neither can be used as an oracle for the other operation.
        decrypt = usage == "decrypt"
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: not decrypt,
            Attribute.DECRYPT: decrypt,
            Attribute.UNWRAP: decrypt,
            Attribute.DERIVE: False,
        }
        public_template: dict[Attribute, Any] = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.VERIFY: not decrypt,
            Attribute.ENCRYPT: decrypt,
            Attribute.WRAP: decrypt,
        }
        capabilities = (
            MechanismFlag.DECRYPT
            | MechanismFlag.ENCRYPT
            | MechanismFlag.UNWRAP
            | MechanismFlag.WRAP
            if decrypt
            else MechanismFlag.SIGN | MechanismFlag.VERIFY
        )
        with shared.lock:
            try:
                if self._find(shared, ObjectClass.PRIVATE_KEY, label=label) is not None:
                    raise KeyStoreError(
                        f"a key labelled {label!r} already exists in token {self.token_label!r}"
                    )
                if key_type in RSA_SIZES:
                    p11_type, bits = KeyType.RSA, RSA_SIZES[key_type]
                elif key_type in EC_CURVES:
                    p11_type, bits = KeyType.EC, None
                    # EC_PARAMS is the DER of the named curve's OID (ANSI X9.62 namedCurve).
                    oid = asn1_core.ObjectIdentifier(_CURVE_OIDS[key_type])
                    public_template[Attribute.EC_PARAMS] = oid.dump()
                else:
                    raise KeyStoreError(f"unknown key type {key_type!r}")
                shared.session.generate_keypair(
                    p11_type,
                    bits,
                    id=key_id,
                    label=label,
                    store=True,
                    capabilities=capabilities,
                    public_template=public_template,
                    private_template=private_template,
                )
            except p11exc.PKCS11Error as exc:
                _fail(f"generating a {key_type} {usage} key {label!r}", exc)
        return self.load(label)

    def load(self, label: str) -> CAPrivateKey:
        validate_label(label)
        shared = self._session()
        with shared.lock:
            try:
                priv = self._find(shared, ObjectClass.PRIVATE_KEY, label=label)
                if priv is None:
                    raise KeyStoreError(
                        f"no key labelled {label!r} in PKCS#11 token {self.token_label!r}"
                    )
                key_type = priv[Attribute.KEY_TYPE]
                if key_type == KeyType.RSA:
                    # Modulus and exponent are public attributes of the private object.
                    n = int.from_bytes(priv[Attribute.MODULUS], "big")
                    e = int.from_bytes(priv[Attribute.PUBLIC_EXPONENT], "big")
                    public = rsa.RSAPublicNumbers(e, n).public_key()
                    can_decrypt = bool(priv[Attribute.DECRYPT])
                    return PKCS11RSAPrivateKey(shared, priv, label, public, can_decrypt=can_decrypt)
                if key_type == KeyType.EC:
                    public_ec = self._ec_public_key(shared, priv, label)
                    return PKCS11ECPrivateKey(shared, priv, label, public_ec)
            except p11exc.PKCS11Error as exc:
                _fail(f"loading key {label!r}", exc)
        raise KeyStoreError(f"key {label!r} in the token is {key_type}, not RSA or EC")

    def _ec_public_key(
        self, shared: _SharedSession, priv: Any, label: str
    ) -> ec.EllipticCurvePublicKey:
        params = bytes(priv[Attribute.EC_PARAMS])
        try:
            oid = asn1_core.ObjectIdentifier.load(params).dotted
            curve = ec.get_curve_for_oid(x509.ObjectIdentifier(oid))()
        except Exception as exc:
            raise KeyStoreError(f"key {label!r} is on an unsupported EC curve") from exc
        # The point is only on the public object; find it by CKA_ID, then by label.
        pub = self._find(shared, ObjectClass.PUBLIC_KEY, key_id=bytes(priv[Attribute.ID]))
        if pub is None:
            pub = self._find(shared, ObjectClass.PUBLIC_KEY, label=label)
        if pub is None:
            raise KeyStoreError(
                f"the public half of EC key {label!r} is missing from token {self.token_label!r}"
            )
        point = bytes(pub[Attribute.EC_POINT])
        size = (curve.key_size + 7) // 8
        if len(point) != 1 + 2 * size:
            # PKCS#11 says DER OCTET STRING around the point; some tokens give it raw.
            point = bytes(asn1_core.OctetString.load(point).native)
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)

    def remove(self, label: str) -> None:
        validate_label(label)
        shared = self._session()
        with shared.lock:
            try:
                priv = self._find(shared, ObjectClass.PRIVATE_KEY, label=label)
                if priv is None:
                    raise KeyStoreError(
                        f"no key labelled {label!r} in PKCS#11 token {self.token_label!r}"
                    )
                key_id = bytes(priv[Attribute.ID])
                priv.destroy()
                for attrs in (
                    {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id},
                    {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label},
                ):
                    for obj in list(shared.session.get_objects(attrs)):
                        obj.destroy()
            except p11exc.PKCS11Error as exc:
                _fail(f"removing key {label!r}", exc)

    def export_pem(self, label: str, passphrase: bytes) -> bytes:
        raise KeyStoreError(NOT_EXTRACTABLE)

    def key_attributes(self, label: str) -> dict[str, bool]:
        """The protection flags of a private key, as the token reports them (for audits)."""
        validate_label(label)
        shared = self._session()
        names = {
            "sensitive": Attribute.SENSITIVE,
            "always_sensitive": Attribute.ALWAYS_SENSITIVE,
            "extractable": Attribute.EXTRACTABLE,
            "never_extractable": Attribute.NEVER_EXTRACTABLE,
            "local": Attribute.LOCAL,
            "private": Attribute.PRIVATE,
            "sign": Attribute.SIGN,
            "decrypt": Attribute.DECRYPT,
            "unwrap": Attribute.UNWRAP,
            "derive": Attribute.DERIVE,
        }
        with shared.lock:
            try:
                priv = self._find(shared, ObjectClass.PRIVATE_KEY, label=label)
                if priv is None:
                    raise KeyStoreError(
                        f"no key labelled {label!r} in PKCS#11 token {self.token_label!r}"
                    )
                values = priv.get_attributes(list(names.values()))
            except p11exc.PKCS11Error as exc:
                _fail(f"reading the attributes of key {label!r}", exc)
        return {name: bool(values[attr]) for name, attr in names.items()}

    def import_pem(self, label: str, pem: bytes, passphrase: bytes) -> CAPrivateKey:
        raise KeyStoreError(NOT_EXTRACTABLE)

    @staticmethod
    def _find(
        shared: _SharedSession,
        object_class: ObjectClass,
        *,
        label: str | None = None,
        key_id: bytes | None = None,
    ) -> Any | None:
        attrs: dict[Attribute, Any] = {Attribute.CLASS: object_class}
        if label is not None:
            attrs[Attribute.LABEL] = label
        if key_id is not None:
            attrs[Attribute.ID] = key_id
        found = list(shared.session.get_objects(attrs))
        if len(found) > 1:
            raise KeyStoreError(
                f"{len(found)} {object_class.name} objects match {label or key_id!r} in the "
                "token; remove the duplicates"
            )
        return found[0] if found else None


# -- the key objects cryptography signs with -------------------------------------------


def _digest(
    data: bytes, algorithm: asym_utils.Prehashed | hashes.HashAlgorithm
) -> tuple[bytes, hashes.HashAlgorithm]:
    if isinstance(algorithm, asym_utils.Prehashed):
        hash_alg: hashes.HashAlgorithm = algorithm._algorithm  # no public accessor
        if len(data) != hash_alg.digest_size:
            raise ValueError("the prehashed digest has the wrong length for its algorithm")
        return bytes(data), hash_alg
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), algorithm


def _oaep_refused(hash_name: str, mgf_name: str) -> str:
    # Seen with SoftHSM2 2.6: CKM_RSA_PKCS_OAEP works only with SHA-1 for both the
    # OAEP hash and MGF1; anything else is CKR_ARGUMENTS_BAD.
    if hash_name == mgf_name:
        used = f"RSA-OAEP with {hash_name.upper().replace('SHA', 'SHA-')}"
    else:
        used = f"RSA-OAEP with {hash_name}/MGF1-{mgf_name}"
    return f"the token refused {used}; SoftHSM2 supports only SHA-1: set the OAEP hash to sha1"


def _in_token(what: str) -> NoReturn:
    raise KeyStoreError(f"cannot {what}: the private key lives in the PKCS#11 token")


class _TokenKey:
    """What both key classes hold: the shared session and the token's key object."""

    def __init__(self, shared: _SharedSession, handle: Any, label: str) -> None:
        self._shared = shared
        self._handle = handle
        self.label = label

    def _token_sign(self, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
        shared = self._shared
        with shared.lock:
            if shared.closed:
                raise KeyStoreError(
                    f"cannot sign with key {self.label!r}: its PKCS#11 key store was closed"
                )
            # python-pkcs11 gives a key object sign() only if its CKA_SIGN is true.
            if not hasattr(self._handle, "sign"):
                raise KeyStoreError(f"cannot sign with key {self.label!r}: it is a decryption key")
            try:
                result: bytes = self._handle.sign(data, mechanism=mechanism, mechanism_param=param)
            except p11exc.ArgumentsBad as exc:
                if mechanism != Mechanism.RSA_PKCS_PSS:
                    _fail(f"signing with key {self.label!r}", exc)
                # Seen with SoftHSM2: it wants the MGF1 hash to equal the message hash.
                raise KeyStoreError(
                    f"the token refused the RSA-PSS parameters for key {self.label!r}; "
                    "use the same hash for MGF1 as for the message"
                ) from exc
            except p11exc.PKCS11Error as exc:
                _fail(f"signing with key {self.label!r}", exc)
        return result

    def private_bytes(
        self,
        encoding: _serialization.Encoding,
        format: _serialization.PrivateFormat,
        encryption_algorithm: _serialization.KeySerializationEncryption,
    ) -> bytes:
        raise KeyStoreError(NOT_EXTRACTABLE)

    def __copy__(self) -> Self:
        return self  # a handle to the same token object; nothing to copy

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class PKCS11RSAPrivateKey(_TokenKey, rsa.RSAPrivateKey):
    """An RSA key in a token: signs (or RSA-OAEP decrypts) there, refuses to reveal itself."""

    def __init__(
        self,
        shared: _SharedSession,
        handle: Any,
        label: str,
        public: rsa.RSAPublicKey,
        *,
        can_decrypt: bool = False,
    ) -> None:
        super().__init__(shared, handle, label)
        self._public = public
        self._can_decrypt = can_decrypt

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: asym_utils.Prehashed | hashes.HashAlgorithm | asym_utils.NoDigestInfo,
    ) -> bytes:
        if isinstance(algorithm, asym_utils.NoDigestInfo):
            if not isinstance(padding, rsa_padding.PKCS1v15):
                raise ValueError("NoDigestInfo is only valid with PKCS1v15 padding")
            return self._token_sign(bytes(data), Mechanism.RSA_PKCS)
        digest, hash_alg = _digest(data, algorithm)
        if hash_alg.name not in _DIGEST_INFO:
            raise KeyStoreError(
                f"hash {hash_alg.name} is not supported for token signatures: "
                "use SHA-256, SHA-384 or SHA-512"
            )
        if isinstance(padding, rsa_padding.PKCS1v15):
            return self._token_sign(_DIGEST_INFO[hash_alg.name] + digest, Mechanism.RSA_PKCS)
        if isinstance(padding, rsa_padding.PSS):
            mgf = padding.mgf
            mgf_hash: hashes.HashAlgorithm = getattr(mgf, "_algorithm", hash_alg)
            if not isinstance(mgf, rsa_padding.MGF1) or mgf_hash.name not in _HASH_MECH:
                raise KeyStoreError("only MGF1 with SHA-2 is supported for PSS in the token")
            salt = self._pss_salt_length(padding, hash_alg)
            param = (_HASH_MECH[hash_alg.name][0], _HASH_MECH[mgf_hash.name][1], salt)
            return self._token_sign(digest, Mechanism.RSA_PKCS_PSS, param)
        raise KeyStoreError(f"padding {padding.name} is not supported for token signatures")

    def _pss_salt_length(self, padding: rsa_padding.PSS, hash_alg: hashes.HashAlgorithm) -> int:
        salt = padding._salt_length  # no public accessor in cryptography 50
        if isinstance(salt, int):
            return salt
        if salt is rsa_padding.PSS.DIGEST_LENGTH:
            return hash_alg.digest_size
        if salt is rsa_padding.PSS.MAX_LENGTH:
            return rsa_padding.calculate_max_pss_salt_length(self._public, hash_alg)
        raise ValueError("PSS salt length AUTO is only valid when verifying")

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """RSA-OAEP (MGF1, no label) decryption in the token; KeyStoreError otherwise."""
        if not self._can_decrypt:
            _in_token(f"decrypt with key {self.label!r} (it is a signing key)")
        if not isinstance(padding, rsa_padding.OAEP):
            # PKCS#1 v1.5 decryption is a padding oracle (Bleichenbacher); nothing
            # in mailpki needs it, so the token is never asked to do it.
            raise KeyStoreError(
                f"padding {padding.name} is not supported for token decryption: use RSA-OAEP"
            )
        mgf = padding.mgf
        if not isinstance(mgf, rsa_padding.MGF1):
            raise KeyStoreError("only MGF1 is supported for RSA-OAEP in the token")
        hash_name = padding.algorithm.name
        mgf_name = mgf._algorithm.name  # no public accessor in cryptography 50
        if hash_name not in _OAEP_HASH or mgf_name not in _OAEP_HASH:
            raise KeyStoreError(
                f"RSA-OAEP with {hash_name}/MGF1-{mgf_name} is not supported in the token: "
                "use SHA-1, SHA-256, SHA-384 or SHA-512"
            )
        if padding._label:  # no public accessor in cryptography 50
            raise KeyStoreError("RSA-OAEP with a label is not supported for token decryption")
        data = bytes(ciphertext)
        if len(data) != (self.key_size + 7) // 8:
            raise KeyStoreError(
                f"the ciphertext is {len(data)} bytes; key {self.label!r} needs exactly "
                f"{(self.key_size + 7) // 8}"
            )
        param = (_OAEP_HASH[hash_name][0], _OAEP_HASH[mgf_name][1], None)
        shared = self._shared
        with shared.lock:
            if shared.closed:
                raise KeyStoreError(
                    f"cannot decrypt with key {self.label!r}: its PKCS#11 key store was closed"
                )
            try:
                result: bytes = self._handle.decrypt(
                    data, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=param
                )
            except (p11exc.ArgumentsBad, p11exc.MechanismParamInvalid) as exc:
                # The parameters are refused before any decryption, so saying why
                # leaks nothing about the plaintext.
                raise KeyStoreError(_oaep_refused(hash_name, mgf_name)) from exc
            except p11exc.PKCS11Error as exc:
                # One message for every failure of the decryption itself: telling
                # the causes apart would help a padding-oracle attack (Manger).
                raise KeyStoreError(
                    f"RSA-OAEP decryption with key {self.label!r} failed in the token: "
                    "the ciphertext is damaged or was not made for this key"
                ) from exc
        return result

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _in_token("read the private numbers")

    def __repr__(self) -> str:
        return f"<PKCS11RSAPrivateKey {self.label!r} {self.key_size} bits>"


class PKCS11ECPrivateKey(_TokenKey, ec.EllipticCurvePrivateKey):
    """An EC key in a token: ECDSA there, DER-encoded here."""

    def __init__(
        self,
        shared: _SharedSession,
        handle: Any,
        label: str,
        public: ec.EllipticCurvePublicKey,
    ) -> None:
        super().__init__(shared, handle, label)
        self._public = public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise KeyStoreError("only ECDSA signatures are supported for EC token keys")
        if getattr(signature_algorithm, "deterministic_signing", False):
            # CKM_ECDSA uses the token's RNG; silently signing non-deterministically
            # would break what the caller asked for (RFC 6979).
            raise KeyStoreError("deterministic ECDSA (RFC 6979) is not available in the token")
        digest, _ = _digest(bytes(data), signature_algorithm.algorithm)
        # CKM_ECDSA signs a hash (truncating it to the order's size as ECDSA
        # requires) and returns r || s, each padded to the order's byte length.
        raw = self._token_sign(digest, Mechanism.ECDSA)
        half = len(raw) // 2
        r = int.from_bytes(raw[:half], "big")
        s = int.from_bytes(raw[half:], "big")
        return asym_utils.encode_dss_signature(r, s)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        _in_token("do a key exchange (the CA key is a signing key)")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        _in_token("read the private numbers")

    def __repr__(self) -> str:
        return f"<PKCS11ECPrivateKey {self.label!r} {self.curve.name}>"
