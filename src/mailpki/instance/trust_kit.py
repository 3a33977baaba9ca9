"""External trust: what outside correspondents need to trust the organisation's root.

The kit holds the root certificate as PEM, DER (``.cer``, what Windows and Android
import) and PKCS#7 certs-only (``.p7c``), an Apple configuration profile holding it
(``.mobileconfig``, for iPhone and iPad), and its fingerprints. `mailpki serve` offers
the same files at ``/trust/NAME`` with the instructions at ``/trust``; ``mailpki ca
trust-kit --out DIR`` writes them for mail or a web site of your own.

A person's own PKCS#12 can also be delivered as a profile (`personal_profile`), for an
iPhone: the portal offers it as the alternative form of the same one-time download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from mailpki.base.files import write_atomically
from mailpki.base.mobileconfig import pkcs12_profile, root_profile
from mailpki.enrollment.portal_store import StoredDownload
from mailpki.errors import InputError
from mailpki.instance.instance import Instance

__all__ = ["KIT_FILES", "TrustKit", "personal_profile"]

# name -> (media type, what it is for); the order is the order shown.
KIT_FILES: dict[str, tuple[str, str]] = {
    "root.pem": ("application/x-pem-file", "PEM: Thunderbird, Linux, gpgsm"),
    "root.cer": ("application/pkix-cert", "DER: Windows / Outlook, macOS, Android"),
    "root.p7c": (
        "application/pkcs7-mime; smime-type=certs-only",
        "PKCS#7 certificate bundle: Windows, older clients",
    ),
    "root.mobileconfig": ("application/x-apple-aspen-config", "Apple profile: iPhone and iPad"),
    "fingerprints.txt": ("text/plain; charset=utf-8", "the root's fingerprints, to compare"),
}
INSTRUCTIONS = "README.html"


def _colon_hex(digest: bytes) -> str:
    return digest.hex(":").upper()


@dataclass(frozen=True)
class TrustKit:
    organisation: str
    root: x509.Certificate
    files: dict[str, bytes]

    @property
    def sha256(self) -> str:
        return _colon_hex(self.root.fingerprint(hashes.SHA256()))

    @property
    def sha1(self) -> str:
        """Windows calls it the thumbprint; shown beside SHA-256 for tools that only show it."""
        return _colon_hex(self.root.fingerprint(hashes.SHA1()))  # noqa: S303 (a label)

    @property
    def subject(self) -> str:
        return self.root.subject.rfc4514_string()

    @classmethod
    def of(cls, instance: Instance) -> TrustKit:
        root = instance.hierarchy.root
        organisation = str(instance.config.get("instance.org"))
        domain = str(instance.config.get("instance.domain"))
        sha256 = _colon_hex(root.fingerprint(hashes.SHA256()))
        sha1 = _colon_hex(root.fingerprint(hashes.SHA1()))  # noqa: S303
        fingerprints = (
            f"{organisation} root certificate\n"
            f"subject: {root.subject.rfc4514_string()}\n"
            f"valid until: {root.not_valid_after_utc:%Y-%m-%d}\n"
            f"SHA-256: {sha256}\n"
            f"SHA-1 (Windows thumbprint): {sha1}\n"
        )
        files = {
            "root.pem": root.public_bytes(Encoding.PEM),
            "root.cer": root.public_bytes(Encoding.DER),
            "root.p7c": pkcs7.serialize_certificates([root], Encoding.DER),
            "root.mobileconfig": root_profile(root, organisation=organisation, domain=domain),
            "fingerprints.txt": fingerprints.encode("utf-8"),
        }
        return cls(organisation, root, files)

    def write(self, folder: Path, *, instructions: str, force: bool = False) -> list[Path]:
        """Write the files and the instructions (HTML) into `folder`; existing files are
        kept unless `force` (InputError names the first one)."""
        targets = {**self.files, INSTRUCTIONS: instructions.encode("utf-8")}
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} exists and is not a folder")
        if not force:
            for name in targets:
                if (folder / name).exists():
                    raise InputError(f"{folder / name} already exists; use --force to replace it")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create {folder}: {exc.strerror}") from None
        written = []
        for name, data in targets.items():
            write_atomically(folder / name, data)
            written.append(folder / name)
        return written


def personal_profile(instance: Instance, download: StoredDownload) -> tuple[str, bytes]:
    """A one-time PKCS#12 download as an Apple profile: (file name, profile bytes)."""
    certificate = x509.load_der_x509_certificate(
        instance.ca.certificate_der(int(download.serial, 16))
    )
    name = download.filename.removesuffix(".p12") + ".mobileconfig"
    profile = pkcs12_profile(
        download.data,
        file_name=download.filename,
        certificate=certificate,
        root=instance.hierarchy.root,
        organisation=str(instance.config.get("instance.org")),
        domain=str(instance.config.get("instance.domain")),
    )
    return name, profile
