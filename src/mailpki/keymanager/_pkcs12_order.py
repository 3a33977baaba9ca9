"""Put the certificates of a legacy PKCS#12 file in issuer-first order.

gpgsm 2.2 stores each certificate bag as it reads it and looks for its issuer at that
moment: with the person's certificate first (as pyca/cryptography writes it, the CAs
after), every certificate but the root reports "issuer certificate not found" and the
import exits 2, although all of it was imported. Root first, person last, the import
is clean.

pyca/cryptography cannot choose the order, so the file it wrote is opened (legacy
PBES1: the PKCS#12 KDF of RFC 7292 appendix B, SHA-1, 3-key 3DES-CBC), its certificate
bags reordered, and the safe encrypted again with the same key and IV, and the MAC
recomputed. Only files this module's caller has just built pass through it, with the
password it built them with.
"""

from __future__ import annotations

import hashlib
import hmac

from asn1crypto import cms, core
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes

__all__ = ["gpgsm_derives_the_same_keys", "issuer_first", "pkcs12_kdf", "pkcs12_kdf_sha1"]

_PBE_SHA1_3DES = "1.2.840.113549.1.12.1.3"
_SHA1_BLOCK, _SHA1_SIZE = 64, 20
_KEY_ID, _IV_ID, _MAC_ID = 1, 2, 3


def pkcs12_kdf_sha1(password: bytes, salt: bytes, purpose: int, rounds: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 with SHA-1; `password` is UTF-8 (made a BMPString here)."""
    return pkcs12_kdf(password, salt, purpose, rounds, size, hash_name="sha1")


def _stretch(data: bytes, v: int = _SHA1_BLOCK) -> bytes:
    """`data` repeated to a whole number of v-byte blocks (RFC 7292 B.2 steps 2-3)."""
    if not data:
        return b""
    length = v * -(-len(data) // v)
    return (data * (length // len(data) + 1))[:length]


def _block_i(password: bytes, salt: bytes) -> bytes:
    """I = S || P of RFC 7292 B.2: the stretched salt and BMPString password."""
    bmp = password.decode("utf-8").encode("utf-16-be") + b"\0\0" if password else b""
    return _stretch(salt) + _stretch(bmp)


def _round(hash_name: str, purpose: int, block_i: bytes, rounds: int) -> bytes:
    """A_i of RFC 7292 B.2 step 6a: H^rounds(D || I)."""
    digest = hashlib.new(hash_name, bytes([purpose]) * _SHA1_BLOCK + block_i).digest()
    for _ in range(rounds - 1):
        digest = hashlib.new(hash_name, digest).digest()
    return digest


def _updated_blocks(block_i: bytes, digest: bytes) -> list[int]:
    """Each block I_j + B + 1, before it is reduced to 64 bytes (B.2 step 6c)."""
    b_value = int.from_bytes(_stretch(digest), "big") + 1
    v = _SHA1_BLOCK
    return [int.from_bytes(block_i[s : s + v], "big") + b_value for s in range(0, len(block_i), v)]


def pkcs12_kdf(
    password: bytes, salt: bytes, purpose: int, rounds: int, size: int, *, hash_name: str
) -> bytes:
    """RFC 7292 appendix B.2 with `hash_name` (sha1 or sha256, both 64-byte blocks):
    the MAC key of a PKCS#12 file; `password` is UTF-8 (made a BMPString here)."""
    if hash_name not in ("sha1", "sha256"):
        raise ValueError(f"no PKCS#12 KDF with {hash_name}")
    block_i = _block_i(password, salt)
    out = b""
    while len(out) < size:
        digest = _round(hash_name, purpose, block_i, rounds)
        out += digest
        block_i = b"".join(
            (number % (1 << (8 * _SHA1_BLOCK))).to_bytes(_SHA1_BLOCK, "big")
            for number in _updated_blocks(block_i, digest)
        )
    return out[:size]


def _crypt(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(TripleDES(key), modes.CBC(iv))
    if encrypt:
        padder = padding.PKCS7(64).padder()
        encryptor = cipher.encryptor()
        return encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()
    decryptor = cipher.decryptor()
    unpadder = padding.PKCS7(64).unpadder()
    plain = decryptor.update(data) + decryptor.finalize()
    return unpadder.update(plain) + unpadder.finalize()


def _reordered(bags: asn1_pkcs12.SafeContents) -> asn1_pkcs12.SafeContents:
    """The bags with the certificates reversed (they were: person, issuing CA, root)."""
    certs = [bag for bag in bags if bag["bag_id"].native == "cert_bag"]
    others = [bag for bag in bags if bag["bag_id"].native != "cert_bag"]
    return asn1_pkcs12.SafeContents([*others, *reversed(certs)])


def issuer_first(data: bytes, password: bytes) -> bytes:
    """The legacy PKCS#12 `data` (as pyca/cryptography writes it) with its certificate
    bags root first; ValueError if it is not such a file."""
    pfx = asn1_pkcs12.Pfx.load(data)
    safes = []
    for info in pfx.authenticated_safe:
        if info["content_type"].native != "encrypted_data":
            safes.append(info)
            continue
        encrypted = info["content"]["encrypted_content_info"]
        algorithm = encrypted["content_encryption_algorithm"]
        if algorithm["algorithm"].dotted != _PBE_SHA1_3DES:
            raise ValueError("not a legacy (PBES1 SHA-1 3DES) PKCS#12 safe")
        salt = bytes(algorithm["parameters"]["salt"].native)
        rounds = int(algorithm["parameters"]["iterations"].native)
        key = pkcs12_kdf_sha1(password, salt, _KEY_ID, rounds, 24)
        iv = pkcs12_kdf_sha1(password, salt, _IV_ID, rounds, 8)
        plain = _crypt(key, iv, bytes(encrypted["encrypted_content"].native), encrypt=False)
        reordered = _reordered(asn1_pkcs12.SafeContents.load(plain)).dump(force=True)
        safes.append(
            cms.ContentInfo(
                {
                    "content_type": "encrypted_data",
                    "content": cms.EncryptedData(
                        {
                            "version": "v0",
                            "encrypted_content_info": {
                                "content_type": "data",
                                "content_encryption_algorithm": algorithm,
                                "encrypted_content": _crypt(key, iv, reordered, encrypt=True),
                            },
                        }
                    ),
                }
            )
        )
    auth_safe = asn1_pkcs12.AuthenticatedSafe(safes).dump(force=True)
    mac_data = pfx["mac_data"]
    if mac_data["mac"]["digest_algorithm"]["algorithm"].native != "sha1":
        raise ValueError("not a legacy (HMAC-SHA1) PKCS#12 MAC")
    mac_salt = bytes(mac_data["mac_salt"].native)
    mac_rounds = int(mac_data["iterations"].native)
    mac_key = pkcs12_kdf_sha1(password, mac_salt, _MAC_ID, mac_rounds, _SHA1_SIZE)
    digest = hmac.new(mac_key, auth_safe, "sha1").digest()
    rebuilt = asn1_pkcs12.Pfx(
        {
            "version": "v3",
            "auth_safe": {"content_type": "data", "content": core.OctetString(auth_safe)},
            "mac_data": {
                "mac": {"digest_algorithm": {"algorithm": "sha1"}, "digest": digest},
                "mac_salt": mac_salt,
                "iterations": mac_rounds,
            },
        }
    )
    result: bytes = rebuilt.dump(force=True)
    return result


def _gpgsm_agrees(password: bytes, salt: bytes, rounds: int) -> bool:
    """Whether gpgsm 2.2 derives the same 3DES key as RFC 7292 from this salt.

    Its KDF (minip12.c `string_to_key`) writes each updated 64-byte block I_j back with
    `gcry_mpi_print`, which drops leading zero bytes and so shifts the block when the
    sum I_j + B + 1 starts with 0x00 (about 1 block in 256). A 24-byte 3DES key needs a
    second SHA-1 round, which then hashes the shifted block: gpgsm gets another key and
    cannot open the file. The 8-byte IV and the 20-byte MAC key need one round only.
    """
    block_i = _block_i(password, salt)
    digest = _round("sha1", _KEY_ID, block_i, rounds)
    top_byte = 1 << (8 * (_SHA1_BLOCK - 1))
    return all(
        number % (1 << (8 * _SHA1_BLOCK)) >= top_byte for number in _updated_blocks(block_i, digest)
    )


def gpgsm_derives_the_same_keys(data: bytes, password: bytes) -> bool:
    """Whether gpgsm 2.2 can decrypt every part of this legacy PKCS#12 `data` (the key
    bag and the encrypted certificate safes), given its KDF fault (`_gpgsm_agrees`)."""
    pfx = asn1_pkcs12.Pfx.load(data)
    for info in pfx.authenticated_safe:
        kind = info["content_type"].native
        if kind == "encrypted_data":
            algorithm = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
            parameters = [algorithm]
        elif kind == "data":
            bags = asn1_pkcs12.SafeContents.load(bytes(info["content"].native))
            parameters = [
                bag["bag_value"]["encryption_algorithm"]
                for bag in bags
                if bag["bag_id"].native == "pkcs8_shrouded_key_bag"
            ]
        else:
            continue
        for algorithm in parameters:
            if algorithm["algorithm"].dotted != _PBE_SHA1_3DES:
                continue  # only the legacy PBES1 derivation has the fault
            salt = bytes(algorithm["parameters"]["salt"].native)
            rounds = int(algorithm["parameters"]["iterations"].native)
            if not _gpgsm_agrees(password, salt, rounds):
                return False
    return True
