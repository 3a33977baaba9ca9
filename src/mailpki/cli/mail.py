"""`mailpki mail sign|encrypt|sign-encrypt|decrypt|verify|send` and `mailpki contacts …`:
the S/MIME toolkit on the command line (the library is mailpki.smime)."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Annotated, Literal

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailpki.ca.serials import show_serial
from mailpki.cli.common import (
    HomeOption,
    console,
    err_console,
    handle_errors,
    print_json,
    read_input,
    read_password_file,
)
from mailpki.cli.enroll import mail_app
from mailpki.errors import CMSError, InputError, MailError
from mailpki.instance.config import resolve_home
from mailpki.instance.instance import Instance
from mailpki.instance.smime_ops import (
    Toolkit,
    envelope_recipients,
    envelope_sender,
    sender_encryption_certificate,
    submit,
)
from mailpki.keymanager.pkcs12 import LoadedPKCS12, load_pkcs12
from mailpki.notify.mail import MailSettings
from mailpki.smime.contacts import addresses_of
from mailpki.smime.message import (
    Verified,
    check_fits,
    decrypt_message,
    encrypt_message,
    is_encrypted,
    sign_message,
    verify_message,
)
from mailpki.smime.mime import MAX_MESSAGE_BYTES
from mailpki.smime.trust import TrustAnchors, check_certificate

contacts_app = typer.Typer(
    help="Correspondents' certificates kept for encryption (from their signed mails).",
    no_args_is_help=True,
)

InFile = Annotated[Path, typer.Argument(help="The message (RFC 5322 .eml); - for stdin.")]
OutFile = Annotated[Path, typer.Argument(help="Where to write the result; - for stdout.")]
P12Option = Annotated[Path, typer.Option("--p12", help="Your PKCS#12 (key and certificate).")]
PasswordOption = Annotated[
    Path, typer.Option("--password-file", help="File whose first line is the PKCS#12 password.")
]
ToOption = Annotated[
    list[str], typer.Option("--to", help="A recipient's mail address (repeat for several).")
]
CipherOption = Annotated[
    str,
    typer.Option("--cipher", help="aes256-cbc (EnvelopedData) or aes256-gcm (AuthEnvelopedData)."),
]
OaepOption = Annotated[
    bool, typer.Option("--oaep", help="RSA-OAEP key transport (else PKCS#1 v1.5).")
]
TrustOption = Annotated[
    list[Path],
    typer.Option("--trust", help="A trusted root (or intermediate) certificate file (repeatable)."),
]
CertOption = Annotated[
    list[Path],
    typer.Option("--cert", help="A recipient certificate file to use (repeatable)."),
]
ContactsOption = Annotated[
    Path | None,
    typer.Option(
        "--contacts",
        help="Contacts folder (default: HOME/contacts, else ~/.local/share/mailpki/contacts).",
    ),
]
CertdirOption = Annotated[
    str | None,
    typer.Option("--certdir", help="URL of a mailpki instance whose certificate directory to ask."),
]
DnsOption = Annotated[
    bool,
    typer.Option(
        "--dns",
        help="Also look recipients up by SMIMEA in the DNS; only DNSSEC-validated answers count.",
    ),
]
ResolverOption = Annotated[
    str | None,
    typer.Option(
        "--resolver",
        help="Validating resolver IP[:PORT] for --dns (default: dns.resolver, else the system's).",
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Overwrite OUT.")]
PssOption = Annotated[
    bool, typer.Option("--pss", help="RSA keys sign with RSASSA-PSS (else PKCS#1 v1.5).")
]
EncryptionCertOption = Annotated[
    Path | None,
    typer.Option(
        "--encryption-cert",
        help="Your encryption certificate, named in the signature as the one to encrypt to "
        "(dual key; default: the signing certificate if it can encrypt, else the instance's).",
    ),
]
AllowSha1Option = Annotated[
    bool,
    typer.Option("--allow-sha1", help="Accept signatures made with SHA-1 (older mail clients)."),
]

_CIPHERS = ("aes256-cbc", "aes256-gcm")


# -- helpers --------------------------------------------------------------------------


def _instance(home: Path | None) -> Instance | None:
    """The instance if --home (or $MAILPKI_HOME, or ./mailpki-data) holds one; the toolkit
    also works without."""
    folder = resolve_home(home)
    if home is None and not (folder / "config.toml").is_file():
        return None
    return Instance.open(folder)


def _toolkit(
    home: Path | None,
    *,
    trust: list[Path] | None = None,
    certs: list[Path] | None = None,
    contacts: Path | None = None,
    certdir: str | None = None,
    dns: bool = False,
    resolver: str | None = None,
) -> tuple[Toolkit, Instance | None]:
    if resolver and not dns:
        raise InputError("--resolver is for --dns lookups: add --dns")
    instance = _instance(home)
    kit = Toolkit.build(
        instance=instance,
        trust=trust or [],
        certificates=certs or [],
        contacts_folder=contacts,
        certdir_url=certdir,
        dns=dns,
        resolver=resolver,
    )
    return kit, instance


def _read(path: Path) -> bytes:
    return read_input(path, "message", MAX_MESSAGE_BYTES)


def _write(path: Path, data: bytes, force: bool) -> None:
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    if path.exists() and not force:
        raise InputError(f"{path} already exists; use --force to overwrite it")
    from mailpki.base.files import write_atomically

    write_atomically(path, data)


def _p12(path: Path, password_file: Path) -> LoadedPKCS12:
    return load_pkcs12(read_input(path, "PKCS#12", 1024 * 1024), read_password_file(password_file))


def _cipher(value: str) -> Literal["aes256-cbc", "aes256-gcm"]:
    if value not in _CIPHERS:
        raise InputError(f"--cipher must be one of {', '.join(_CIPHERS)}")
    return "aes256-gcm" if value == "aes256-gcm" else "aes256-cbc"


def _recipients(kit: Toolkit, addresses: list[str]) -> list[x509.Certificate]:
    if not addresses:
        raise InputError("name at least one recipient with --to")
    finder = kit.finder()
    found = []
    for address in dict.fromkeys(a.strip().lower() for a in addresses):
        hit = finder.find(address)
        err_console.print(
            f"{address}: certificate {show_serial(hit.certificate.serial_number)} from {hit.source} "
            f"(revocation: {hit.verdict.revocation})",
            highlight=False,
        )
        found.append(hit.certificate)
    return found


def _close(instance: Instance | None) -> None:
    if instance is not None:
        instance.close()


def _encryption_certificate(
    loaded: LoadedPKCS12, explicit: Path | None, home: Path | None, kit: Toolkit | None = None
) -> x509.Certificate | None:
    """The certificate the signature names as the one to encrypt to (stderr says which).
    The instance is opened only when it must be asked (dual key, no --encryption-cert)."""
    opened: list[Instance | None] = []

    def toolkit() -> Toolkit:
        if kit is not None:
            return kit
        built, instance = _toolkit(home)
        opened.append(instance)
        return built

    try:
        chosen, how = sender_encryption_certificate(loaded.certificate, explicit, toolkit)
    finally:
        for instance in opened:
            _close(instance)
    if chosen is None:
        err_console.print(f"encryption-key preference: {how}", highlight=False)
    elif chosen != loaded.certificate:
        err_console.print(
            f"encryption-key preference: certificate {show_serial(chosen.serial_number)} ({how})",
            highlight=False,
        )
    return chosen


# -- commands --------------------------------------------------------------------------


@handle_errors
def sign(
    source: InFile,
    out: OutFile,
    p12: P12Option,
    password_file: PasswordOption,
    opaque: Annotated[
        bool, typer.Option("--opaque", help="application/pkcs7-mime (else multipart/signed).")
    ] = False,
    pss: PssOption = False,
    encryption_cert: EncryptionCertOption = None,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Sign a message with your key (multipart/signed, or opaque). The signature names
    your encryption certificate, so that replies are encrypted to it."""
    loaded = _p12(p12, password_file)
    encryption_certificate = _encryption_certificate(loaded, encryption_cert, home)
    signed = sign_message(
        _read(source),
        loaded.certificate,
        _signing_key(loaded),
        chain=loaded.chain,
        opaque=opaque,
        pss=pss,
        encryption_certificate=encryption_certificate,
    )
    _write(out, signed, force)


@handle_errors
def encrypt(
    source: InFile,
    out: OutFile,
    to: ToOption,
    cipher: CipherOption = "aes256-cbc",
    oaep: OaepOption = False,
    cert: CertOption = [],  # noqa: B006 (typer reads the default, never mutates it)
    trust: TrustOption = [],  # noqa: B006
    contacts: ContactsOption = None,
    certdir: CertdirOption = None,
    dns: DnsOption = False,
    resolver: ResolverOption = None,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Encrypt a message to each --to address (certificates found automatically; with
    --dns also by DNSSEC-validated SMIMEA records)."""
    message = _read(source)
    check_fits(message, recipients=[])  # too large for any recipient: before the look-up
    kit, instance = _toolkit(
        home,
        trust=trust,
        certs=cert,
        contacts=contacts,
        certdir=certdir,
        dns=dns,
        resolver=resolver,
    )
    try:
        recipients = _recipients(kit, to)
        data = encrypt_message(
            message,
            recipients,
            cipher=_cipher(cipher),
            key_transport="oaep" if oaep else "pkcs1v15",
        )
    finally:
        _close(instance)
    _write(out, data, force)


@handle_errors
def sign_encrypt(
    source: InFile,
    out: OutFile,
    p12: P12Option,
    password_file: PasswordOption,
    to: ToOption,
    cipher: CipherOption = "aes256-cbc",
    oaep: OaepOption = False,
    cert: CertOption = [],  # noqa: B006
    trust: TrustOption = [],  # noqa: B006
    contacts: ContactsOption = None,
    certdir: CertdirOption = None,
    pss: PssOption = False,
    encryption_cert: EncryptionCertOption = None,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Sign, then encrypt to each --to address and to yourself (a readable sent copy)."""
    message = _read(source)
    loaded = _p12(p12, password_file)
    signers = [loaded.certificate, *loaded.chain]
    check_fits(message, signer_certificates=signers, recipients=[])  # before the look-up
    kit, instance = _toolkit(home, trust=trust, certs=cert, contacts=contacts, certdir=certdir)
    try:
        recipients = _recipients(kit, to)
        encryption_certificate = _encryption_certificate(loaded, encryption_cert, home, kit)
        everyone = [*recipients, _own_copy(loaded, encryption_certificate)]
        if encryption_certificate is not None:
            signers.append(encryption_certificate)
        # Both steps' growth, checked before either is done.
        check_fits(message, signer_certificates=signers, recipients=everyone)
        signed = sign_message(
            message,
            loaded.certificate,
            _signing_key(loaded),
            chain=loaded.chain,
            pss=pss,
            encryption_certificate=encryption_certificate,
        )
        data = encrypt_message(
            signed,
            everyone,
            cipher=_cipher(cipher),
            key_transport="oaep" if oaep else "pkcs1v15",
        )
    finally:
        _close(instance)
    _write(out, data, force)


@handle_errors
def decrypt(
    source: InFile,
    out: OutFile,
    p12: P12Option,
    password_file: PasswordOption,
    force: ForceOption = False,
) -> None:
    """Decrypt a message with your key (AES-CBC/GCM, 3DES; PKCS#1 v1.5 or OAEP; DER or BER)."""
    loaded = _p12(p12, password_file)
    if not isinstance(loaded.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise InputError("the PKCS#12 key cannot decrypt S/MIME (RSA or EC keys only)")
    opened = decrypt_message(_read(source), loaded.certificate, loaded.key)
    err_console.print(
        f"decrypted ({opened.cipher}, key transport {opened.key_transport})", highlight=False
    )
    _write(out, opened.message, force)


@handle_errors
def verify(
    source: InFile,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the message without its signature (only if valid)."),
    ] = None,
    trust: TrustOption = [],  # noqa: B006
    require_revocation: Annotated[
        bool, typer.Option("--require-revocation", help="Fail when revocation cannot be checked.")
    ] = False,
    allow_sha1: AllowSha1Option = False,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Verify a signed message: signature, signer, chain, revocation, From address.
    Also names the certificate the sender asks replies to be encrypted to.
    Exit 0 only if all is valid (1 if not)."""
    kit, instance = _toolkit(home, trust=trust)
    try:
        data = _read(source)
        if is_encrypted(data):
            raise InputError("the message is encrypted: 'mailpki mail decrypt' it first")
        if kit.anchors is None:
            raise InputError("no trust anchors: give --trust ROOT.pem or --home of an instance")
        try:
            verified = verify_message(
                data,
                kit.anchors,
                revocation=kit.revocation,
                require_revocation=require_revocation,
                allow_sha1=allow_sha1,
            )
        except CMSError as exc:
            # A signature that does not match is a verdict, not a usage error: exit 1.
            if json_output:
                print_json({"valid": False, "problems": [str(exc)]})
            else:
                console.print(f"problem:    {exc}", highlight=False, markup=False)
                console.print("NOT VALID", highlight=False)
            raise typer.Exit(1) from None
    finally:
        _close(instance)
    signer = verified.signed.signer
    verdict = verified.verdict
    signer_addresses = addresses_of(signer)
    chain = [c.subject.rfc4514_string() for c in verdict.chain]
    signing_time = verified.signed.signing_time
    encrypt_to = verified.encryption_certificate
    preference = verified.signed.encryption_preference
    if out is not None and verified.valid:  # never hand on content that did not verify
        _write(out, verified.message, force)
    if json_output:
        print_json(
            {
                "valid": verified.valid,
                "signer": signer.subject.rfc4514_string(),
                "signer_addresses": signer_addresses,
                "from": list(verified.from_addresses),
                "serial": show_serial(signer.serial_number),
                "chain": chain,
                "revocation": verdict.revocation,
                "revocation_source": verdict.revocation_source,
                "signing_time": signing_time.isoformat() if signing_time else None,
                "digest_algorithm": verified.signed.digest_algorithm,
                "signed_attributes": list(verified.signed.attributes),
                "unknown_attributes": list(verified.signed.unknown_attributes),
                "encryption_certificate": _certificate_json(encrypt_to, signer),
                "encryption_preference": list(preference.named_by) if preference else [],
                "warnings": list(verified.warnings),
                "problems": list(verdict.problems),
            }
        )
    else:
        lines = [
            f"signer:     {signer.subject.rfc4514_string()} (serial {show_serial(signer.serial_number)})",
            f"addresses:  {', '.join(signer_addresses)}; "
            f"From: {', '.join(verified.from_addresses) or '-'}",
            *(f"chain[{depth}]:   {subject}" for depth, subject in enumerate(chain)),
            f"revocation: {verdict.revocation} {verdict.revocation_source}".rstrip(),
            f"encrypt to: {_describe_encryption(encrypt_to, signer, preference is not None)}",
            f"attributes: {', '.join(verified.signed.attributes) or '-'}",
            *(f"warning:    {warning}" for warning in verified.warnings),
            *(f"problem:    {problem}" for problem in verdict.problems),
            "VALID" if verified.valid else "NOT VALID",
        ]
        for line in lines:
            console.print(line, highlight=False, markup=False)
    if not verified.valid:
        raise typer.Exit(1)


def _certificate_json(
    certificate: x509.Certificate | None, signer: x509.Certificate
) -> dict[str, object] | None:
    if certificate is None:
        return None
    return {
        "subject": certificate.subject.rfc4514_string(),
        "serial": show_serial(certificate.serial_number),
        "addresses": addresses_of(certificate),
        "sha256_fingerprint": certificate.fingerprint(hashes.SHA256()).hex(),
        "is_signer": certificate == signer,
    }


def _describe_encryption(
    certificate: x509.Certificate | None, signer: x509.Certificate, stated: bool
) -> str:
    if certificate is None:
        return "- (the encryption-key preference is unusable: see the warning)"
    whose = "the signer's certificate" if certificate == signer else "another certificate"
    how = "named by the signature" if stated else "no preference stated"
    return f"serial {show_serial(certificate.serial_number)}, {whose} ({how})"


@handle_errors
def send(
    to: ToOption = [],  # noqa: B006
    sender: Annotated[
        str | None, typer.Option("--from", help="Your address (default: the certificate's).")
    ] = None,
    subject: Annotated[str, typer.Option("--subject", help="The subject.")] = "",
    body_file: Annotated[
        Path | None,
        typer.Option("--body-file", help="The text of the message (UTF-8); - for stdin."),
    ] = None,
    message_file: Annotated[
        Path | None, typer.Option("--message", help="A whole RFC 5322 message to send instead.")
    ] = None,
    do_sign: Annotated[bool, typer.Option("--sign", help="Sign (needs --p12).")] = False,
    do_encrypt: Annotated[
        bool, typer.Option("--encrypt", help="Encrypt to every recipient.")
    ] = False,
    p12: Annotated[Path | None, typer.Option("--p12", help="Your PKCS#12.")] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="Its password file.")
    ] = None,
    cipher: CipherOption = "aes256-cbc",
    oaep: OaepOption = False,
    cert: CertOption = [],  # noqa: B006
    trust: TrustOption = [],  # noqa: B006
    contacts: ContactsOption = None,
    certdir: CertdirOption = None,
    smtp_host: Annotated[
        str | None, typer.Option("--smtp-host", help="SMTP server (default: smtp.host).")
    ] = None,
    smtp_port: Annotated[
        int | None, typer.Option("--smtp-port", help="SMTP port (default: smtp.port).")
    ] = None,
    pss: PssOption = False,
    encryption_cert: EncryptionCertOption = None,
    home: HomeOption = None,
) -> None:
    """Compose a message, sign and/or encrypt it, and submit it over SMTP."""
    loaded = None
    if do_sign or (do_encrypt and p12 is not None):
        if p12 is None or password_file is None:
            raise InputError("--sign needs --p12 and --password-file")
        loaded = _p12(p12, password_file)
    if (body_file is None) == (message_file is None):
        raise InputError("give either --body-file (compose) or --message (a whole message)")
    from_address = sender or (addresses_of(loaded.certificate)[0] if loaded else None)
    if message_file is not None:
        message = _read(message_file)
    else:
        if not from_address:
            raise InputError("--from is needed (or --p12 to take it from the certificate)")
        if not to:
            raise InputError("name at least one recipient with --to")
        assert body_file is not None
        message = _compose(
            from_address, to, subject, read_input(body_file, "body", MAX_MESSAGE_BYTES)
        )
    kit, instance = _toolkit(home, trust=trust, certs=cert, contacts=contacts, certdir=certdir)
    try:
        signing = loaded is not None and do_sign
        encryption_certificate = None
        if loaded is not None and do_sign:
            encryption_certificate = _encryption_certificate(loaded, encryption_cert, home, kit)
        recipients: list[x509.Certificate] = []
        if do_encrypt:
            # Everyone it is delivered to must be able to read it.
            recipients = _recipients(kit, [*to, *envelope_recipients(message)])
            if loaded is not None:
                recipients.append(_own_copy(loaded, encryption_certificate))
        if signing or do_encrypt:  # both steps' growth, checked before either is done
            signers: list[x509.Certificate] | None = None
            if signing and loaded is not None:
                signers = [loaded.certificate, *loaded.chain]
                if encryption_certificate is not None:
                    signers.append(encryption_certificate)
            check_fits(
                message,
                signer_certificates=signers,
                recipients=recipients if do_encrypt else None,
            )
        if signing and loaded is not None:
            message = sign_message(
                message,
                loaded.certificate,
                _signing_key(loaded),
                chain=loaded.chain,
                pss=pss,
                encryption_certificate=encryption_certificate,
            )
        if do_encrypt:
            message = encrypt_message(
                message,
                recipients,
                cipher=_cipher(cipher),
                key_transport="oaep" if oaep else "pkcs1v15",
            )
        if kit.mail_settings is None and not smtp_host:
            raise MailError("no SMTP server: pass --smtp-host (or --home of an instance)")
        settings = kit.mail_settings or MailSettings(
            transport="smtp",
            sender=from_address or envelope_sender(message),
            smtp_host=smtp_host or "",
        )
        if smtp_host or smtp_port:
            settings = replace(
                settings,
                transport="smtp",
                smtp_host=smtp_host or settings.smtp_host,
                smtp_port=smtp_port or settings.smtp_port,
            )
        sent_to = submit(message, settings, extra_recipients=to)
    finally:
        _close(instance)
    console.print(f"sent to {', '.join(sent_to)}", highlight=False)


def _compose(sender: str, to: list[str], subject: str, body: bytes) -> bytes:
    from email.message import EmailMessage
    from email.policy import SMTP

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the body is not UTF-8 text") from None
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    # Quoted-printable for anything not ASCII: 8-bit text would be re-encoded for signing.
    message.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    return message.as_bytes()


def _own_copy(
    loaded: LoadedPKCS12, encryption_certificate: x509.Certificate | None
) -> x509.Certificate:
    """The sender's certificate a sent copy is encrypted to: the encryption one if the
    signature names one, else the PKCS#12's own."""
    return encryption_certificate or loaded.certificate


def _signing_key(loaded: LoadedPKCS12) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if not isinstance(loaded.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise InputError("the PKCS#12 key cannot sign S/MIME (RSA or EC keys only)")
    return loaded.key


def _signer_of(data: bytes, allow_sha1: bool) -> x509.Certificate:
    """The signer certificate of a signed message (its signature checked), to stand in as
    the only anchor when the user trusts no CA: the contact is pinned, not chained."""
    from mailpki.smime.message import signer_certificate

    return signer_certificate(data, allow_sha1=allow_sha1)


# -- contacts ----------------------------------------------------------------------------


@contacts_app.command("add-from-signed")
@handle_errors
def contacts_add_from_signed(
    source: InFile,
    trust: TrustOption = [],  # noqa: B006
    contacts: ContactsOption = None,
    allow_sha1: AllowSha1Option = False,
    home: HomeOption = None,
) -> None:
    """Keep the certificate to encrypt to of a signed message's sender: the one its
    encryption-key preference names (in dual key not the signing one), else the
    signer's. The signature must verify and the address match From; a foreign CA is
    fine: you vouch for it by adding it."""
    kit, instance = _toolkit(home, trust=trust, contacts=contacts)
    try:
        data = _read(source)
        # The signature must verify; the signer's CA need not be one we trust.
        anchors = kit.anchors or TrustAnchors(roots=(_signer_of(data, allow_sha1),))
        verified = verify_message(data, anchors, revocation=kit.revocation, allow_sha1=allow_sha1)
        signer = verified.signed.signer
        if verified.verdict.revocation == "revoked":
            raise InputError(
                "the signer's certificate is revoked: "
                + "; ".join(p for p in verified.verdict.problems if "revoked" in p)
            )
        if not set(verified.from_addresses) & set(addresses_of(signer)):
            raise InputError(
                f"the signer's certificate is for {', '.join(addresses_of(signer))}, "
                f"not the From address {', '.join(verified.from_addresses) or '(none)'}"
            )
        if signer.not_valid_after_utc <= datetime.now(UTC):
            raise InputError(
                f"the signer's certificate expired on {signer.not_valid_after_utc:%Y-%m-%d}"
            )
        keep = _certificate_to_keep(verified, kit)
    finally:
        _close(instance)
    contact = kit.contacts.add(keep)
    trusted = "chains to a trusted root" if verified.valid else "not from a CA you trust (pinned)"
    which = "" if keep == signer else "the encryption certificate the signature names; "
    console.print(
        f"added {', '.join(contact.addresses)} (fingerprint {contact.fingerprint[:16]}, "
        f"until {contact.not_after:%Y-%m-%d}; {which}{trusted}) to {kit.contacts.folder}",
        highlight=False,
    )


def _certificate_to_keep(verified: Verified, kit: Toolkit) -> x509.Certificate:
    """The certificate add-from-signed stores: the preferred encryption certificate,
    checked like the signer (same From address, encryption allowed, not revoked, and
    chaining to the anchors when the signer does)."""
    signer = verified.signed.signer
    preference = verified.signed.encryption_preference
    if preference is None:
        return signer
    keep = verified.encryption_certificate
    if keep is None:
        raise InputError(f"{preference.problem}: nothing stored")
    if keep == signer:
        return signer
    address = next(a for a in verified.from_addresses if a in addresses_of(signer))
    anchors = kit.anchors if verified.valid and kit.anchors else TrustAnchors(roots=(keep,))
    verdict = check_certificate(
        keep,
        anchors,
        purpose="encrypt",
        address=address,
        extra_intermediates=[c for c in verified.signed.certificates if c != keep],
        revocation=kit.revocation,
    )
    if not verdict.valid:
        raise InputError(
            "the encryption certificate the signature names is not usable: "
            + "; ".join(verdict.problems)
        )
    return keep


@contacts_app.command("list")
@handle_errors
def contacts_list(
    contacts: ContactsOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    home: HomeOption = None,
) -> None:
    """The kept certificates: addresses, fingerprint, expiry."""
    kit, instance = _toolkit(home, contacts=contacts)
    _close(instance)
    listed = kit.contacts.all()
    if json_output:
        print_json(
            [
                {
                    "addresses": list(c.addresses),
                    "fingerprint": c.fingerprint,
                    "subject": c.subject,
                    "not_after": c.not_after.isoformat(),
                    "expired": c.expired,
                }
                for c in listed
            ]
        )
        return
    if not listed:
        console.print(f"no contacts in {kit.contacts.folder}", highlight=False)
    for c in listed:
        state = " (expired)" if c.expired else ""
        console.print(
            f"{', '.join(c.addresses)}  {c.fingerprint[:16]}  until {c.not_after:%Y-%m-%d}{state}",
            highlight=False,
        )


@contacts_app.command("remove")
@handle_errors
def contacts_remove(
    what: Annotated[str, typer.Argument(help="A mail address, or a fingerprint (8+ hex digits).")],
    contacts: ContactsOption = None,
    home: HomeOption = None,
) -> None:
    """Forget a contact's certificates."""
    kit, instance = _toolkit(home, contacts=contacts)
    _close(instance)
    removed = kit.contacts.remove(what)
    console.print(f"removed {len(removed)} certificate(s)", highlight=False)


# `mailpki mail …` is one group: its outbox command lives in cli/enroll.py.
mail_app.command("sign")(sign)
mail_app.command("encrypt")(encrypt)
mail_app.command("sign-encrypt")(sign_encrypt)
mail_app.command("decrypt")(decrypt)
mail_app.command("verify")(verify)
mail_app.command("send")(send)
