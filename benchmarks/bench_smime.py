"""S/MIME toolkit speed against `openssl cms` on the same message, in the same run.

    python -m benchmarks.bench_smime [--size-mb 1] [--rounds 15] [--quick]

Sign + encrypt, and decrypt + verify, of a 1 MB message: mailpki's library
(`mailpki.smime.message`, in-process) and its CLI (`mailpki mail sign-encrypt` /
`decrypt` + `verify`, a new Python process each time), against `openssl cms -sign |
openssl cms -encrypt` and `openssl cms -decrypt | openssl cms -verify`. Both sides use
RSA-2048, SHA-256, AES-256-CBC, multipart/signed, and the same keys. The target is the
library: at most 1.25 x openssl's time (median of the rounds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from benchmarks._common import emit, log, parse_args, target

GOAL = 1.25


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(folder: Path) -> dict[str, object]:
    now = datetime.now(UTC)
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("Bench Root"))
        .issuer_name(_name("Bench Root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    people = {}
    for who in ("alice", "bob"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(who))
            .issuer_name(root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            .add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(f"{who}@bench-corp.com")]), False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
            )
            .sign(root_key, hashes.SHA256())
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (folder / f"{who}.key").write_bytes(pem_key)
        (folder / f"{who}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{who}.p12").write_bytes(
            pkcs12.serialize_key_and_certificates(
                who.encode(), key, cert, [root], serialization.BestAvailableEncryption(b"bench-pw")
            )
        )
        people[who] = (cert, key)
    (folder / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (folder / "pw").write_text("bench-pw\n")
    return {"root": root, "people": people}


def message(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog, again and again, 0123456789.\n"
    body = line * (size // len(line) + 1)
    return (
        b"From: bob@bench-corp.com\nTo: alice@bench-corp.com\nSubject: bench\n"
        b"Content-Type: text/plain; charset=us-ascii\n\n" + body[:size]
    )


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def sh(command: str, cwd: Path) -> None:
    subprocess.run(["bash", "-c", command], cwd=cwd, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    args = parse_args(parser)
    rounds = 5 if args.quick else args.rounds

    from mailpki.smime.message import decrypt_message, encrypt_message, sign_message, verify_message
    from mailpki.smime.trust import TrustAnchors

    with tempfile.TemporaryDirectory(prefix="bench-smime-") as tmp:
        folder = Path(tmp)
        pki = make_pki(folder)
        root = pki["root"]
        (alice_cert, alice_key), (bob_cert, bob_key) = pki["people"].values()  # type: ignore[attr-defined]
        plain = message(int(args.size_mb * 1024 * 1024))
        (folder / "in.eml").write_bytes(plain)
        anchors = TrustAnchors(roots=(root,))  # type: ignore[arg-type]
        log(f"message: {len(plain):,} bytes; {rounds} rounds each")

        def ours_sign_encrypt() -> bytes:
            return encrypt_message(sign_message(plain, bob_cert, bob_key), [alice_cert])

        sealed = ours_sign_encrypt()
        (folder / "ours.eml").write_bytes(sealed)

        def ours_decrypt_verify() -> None:
            opened = decrypt_message(sealed, alice_cert, alice_key)
            verified = verify_message(opened.message, anchors, revocation=None)
            assert verified.valid, verified.verdict.problems

        openssl_se = (
            "openssl cms -sign -in in.eml -signer bob.pem -inkey bob.key -md sha256 "
            "| openssl cms -encrypt -aes-256-cbc -out theirs.eml alice.pem"
        )
        sh(openssl_se, folder)
        openssl_dv = (
            "openssl cms -decrypt -in theirs.eml -recip alice.pem -inkey alice.key "
            "| openssl cms -verify -CAfile root.pem -purpose smimesign -out /dev/null"
        )
        env_path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        cli_se = (
            f"export PATH={env_path}; mailpki mail sign-encrypt --p12 bob.p12 --password-file pw "
            "--to alice@bench-corp.com --cert alice.pem --trust root.pem --contacts c "
            "--force in.eml cli.eml 2>/dev/null"
        )
        cli_dv = (
            f"export PATH={env_path}; mailpki mail decrypt --p12 alice.p12 --password-file pw cli.eml - "
            "2>/dev/null | mailpki mail verify --trust root.pem - >/dev/null"
        )
        figures = {
            "mailpki library, sign + encrypt": timed(ours_sign_encrypt, rounds),
            "openssl cms, sign | encrypt": timed(lambda: sh(openssl_se, folder), rounds),
            "mailpki library, decrypt + verify": timed(ours_decrypt_verify, rounds),
            "openssl cms, decrypt | verify": timed(lambda: sh(openssl_dv, folder), rounds),
            "mailpki CLI, sign-encrypt": timed(lambda: sh(cli_se, folder), max(3, rounds // 3)),
            "mailpki CLI, decrypt | verify": timed(lambda: sh(cli_dv, folder), max(3, rounds // 3)),
        }
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        log(f"{name:36s} median {value:8.1f} ms")
    se = medians["mailpki library, sign + encrypt"] / medians["openssl cms, sign | encrypt"]
    dv = medians["mailpki library, decrypt + verify"] / medians["openssl cms, decrypt | verify"]
    emit(
        {
            "benchmark": "smime",
            "size_bytes": len(plain),
            "medians_ms": {k: round(v, 1) for k, v in medians.items()},
            "targets": [
                target("sign+encrypt 1 MB, library / openssl cms", round(se, 2), "x", GOAL, "<="),
                target("decrypt+verify 1 MB, library / openssl cms", round(dv, 2), "x", GOAL, "<="),
                target(
                    "sign-encrypt 1 MB, CLI (new process) / openssl cms",
                    round(
                        medians["mailpki CLI, sign-encrypt"]
                        / medians["openssl cms, sign | encrypt"],
                        2,
                    ),
                    "x",
                    GOAL,
                    "<=",
                ),
            ],
        }
    )


if __name__ == "__main__":
    main()
