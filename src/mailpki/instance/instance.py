"""An opened instance: configuration, database, key store, audit log and CA."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy.orm import Session

from mailpki.ca.authority import CAHierarchy, CertificateAuthority, list_certificates
from mailpki.ca.listing import OCSP_PROFILE, CertificateInfo
from mailpki.ca.serials import show_serial
from mailpki.ca.settings import CASettings, is_issuing_label
from mailpki.ca.setup import AUDIT_KEY
from mailpki.directory.registry import DirectoryRegistry
from mailpki.dns.settings import DnsSettings, dns_settings_from
from mailpki.errors import ConfigError, InstanceError
from mailpki.instance.actor import cli_actor
from mailpki.instance.audit_keys import audit_keys, load_or_create_mldsa
from mailpki.instance.config import Config, pki_url_from
from mailpki.instance.layout import (
    AUDIT_PUBLIC_KEY,
    CA_DIR,
    CA_FILES,
    KEYS_DIR,
    PROFILES_DIR,
    RECOVERY_DIR,
    THEME_DIR,
    TRANSPORT_KEY_FILE,
    TRANSPORT_MLKEM_KEY_FILE,
    issuing_file,
    load_initialised,
    responder_file,
)
from mailpki.keystore.configured import open_key_store, store_secret
from mailpki.keystore.keys import KeyStore
from mailpki.notify.mail import MailSettings, mail_settings_from
from mailpki.policy.approval import ApprovalRules
from mailpki.policy.profile import load_profile
from mailpki.store.db import Database
from mailpki.store.models import CertificateRecord
from mailpki.store.replica import ReadRouting

# Imported where used, so that a command that needs none of them starts quickly.
if TYPE_CHECKING:
    from mailpki.audit import AuditLog, VerifyReport
    from mailpki.audit.keys import AuditKeys
    from mailpki.auth.directory_logon import DirectoryAuthenticator
    from mailpki.auth.kerberos import KerberosAuthenticator
    from mailpki.auth.limiter import LoginLimiter
    from mailpki.auth.operators import OperatorAuthenticator
    from mailpki.auth.pins import PinAuthenticator
    from mailpki.directory.publisher import Publisher
    from mailpki.dns.publisher import DnsPublisher
    from mailpki.enrollment.requests import ApprovalQueue
    from mailpki.keymanager.manager import KeyManager, PoolCipher
    from mailpki.keystore.recovery_block import TransportKey
    from mailpki.keystore.sealed import SecretSealer
    from mailpki.recovery.client import RecoveryClient


class Instance:
    """Everything of one instance, opened lazily (a read-only command unlocks no key)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.home = config.home
        # Run after every seal, e.g. the CLI's hand-over of checkpoints to the witnesses.
        self.after_seal: list[Callable[[Instance], object]] = []
        self.closed = False

    @classmethod
    def open(cls, home: Path) -> Instance:
        return cls(load_initialised(home))

    # -- parts --------------------------------------------------------------------------

    @cached_property
    def db(self) -> Database:
        return Database(self.config.database_url)

    @cached_property
    def read_routing(self) -> ReadRouting | None:
        """Where tolerant reads go when `database.read_url` names a replica (else None)."""
        url = str(self.config.get("database.read_url"))
        if not url:
            return None
        return ReadRouting(
            self.db,
            url,
            max_lag=timedelta(seconds=int(self.config.get("database.read_max_lag_seconds"))),
        )

    def read_db(self) -> Database:
        """The database for reads that may lag a little (OCSP, certificate directory,
        CRL serving, searches): the replica while healthy, else the primary."""
        routing = self.read_routing
        return routing.reader() if routing is not None else self.db

    def list_certificates(
        self,
        *,
        limit: int | None = None,
        email: str | None = None,
        include_ca: bool = False,
        offset: int = 0,
    ) -> tuple[list[CertificateInfo], int]:
        """A search of the certificates (newest first; page and total): read where
        tolerant reads go, and with no CA key unlocked."""
        return list_certificates(
            self.read_db(), limit=limit, email=email, include_ca=include_ca, offset=offset
        )

    @cached_property
    def keys(self) -> KeyStore:
        return open_key_store(self.config, self.home / KEYS_DIR)

    @cached_property
    def audit(self) -> AuditLog:
        """The log, signing checkpoints with ECDSA and ML-DSA-65 (made at first use)."""
        from mailpki.audit import AuditLog

        signer = self.keys.load(AUDIT_KEY)
        if not isinstance(signer, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise InstanceError("the audit key is neither EC nor RSA")
        every = int(self.config.get("audit.checkpoint_every"))
        pq = load_or_create_mldsa(
            config=self.config,
            keys_dir=self.home / KEYS_DIR,
            ca_dir=self.home / CA_DIR,
            db=self.db,
            classic=signer,
            checkpoint_every=every,
            actor=cli_actor(),
        )
        return AuditLog(signer=signer, pq_signer=pq, checkpoint_every=every)

    @property
    def ca_settings(self) -> CASettings:
        return CASettings(
            base_url=str(self.config.get("web.pki_base_url"))
            or pki_url_from(str(self.config.get("web.base_url"))),
            partition_size=int(self.config.get("crl.partition_size")),
            crl_validity=timedelta(hours=int(self.config.get("crl.validity_hours"))),
            root_crl_validity=timedelta(days=int(self.config.get("crl.root_validity_days"))),
            ocsp_validity=timedelta(hours=int(self.config.get("ocsp.validity_hours"))),
            profile_dir=self.home / PROFILES_DIR,
            default_profile=str(self.config.get("ca.default_profile")),
        )

    @cached_property
    def hierarchy(self) -> CAHierarchy:
        def load(name: str) -> x509.Certificate:
            return load_file(self.home / CA_DIR / CA_FILES[name])

        def load_file(path: Path) -> x509.Certificate:
            try:
                return x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise InstanceError(f"cannot read the CA certificate {path}: {exc}") from None

        # Generations after a rollover: ca/issuing-g2.pem, -g3 ... (ca/issuing.pem is 1).
        folder = self.home / CA_DIR
        issuing, responders = [load("issuing")], [load("ocsp")]
        generation = 2
        while (folder / issuing_file(generation)).is_file():
            issuing.append(load_file(folder / issuing_file(generation)))
            responders.append(load_file(folder / responder_file(generation)))
            generation += 1
        return CAHierarchy(
            root=load("root"),
            issuing=issuing[-1],
            ocsp=responders[-1],
            earlier=tuple(issuing[:-1]),
            earlier_ocsp=tuple(responders[:-1]),
        )

    @cached_property
    def ca(self) -> CertificateAuthority:
        from mailpki.directory.publisher import PUBLISH, UNPUBLISH

        ca = CertificateAuthority(
            db=self.db,
            keys=self.keys,
            hierarchy=self.hierarchy,
            settings=self.ca_settings,
            audit=self.audit,
            read_db=self.read_db,
        )
        if self.config.get("directory.publish") == "true":
            ca.issue_listeners.append(_queue_publication(PUBLISH))
            ca.revoke_listeners.append(_queue_publication(UNPUBLISH))
            ca.supersede_listeners.append(_queue_publication(UNPUBLISH))
            ca.restore_listeners.append(_queue_publication(PUBLISH))
        ca.revoke_listeners.append(self._queue_revocation_notice)
        if self.config.get("dns.update_server"):
            ca.issue_listeners.append(_queue_smimea_update)
            ca.revoke_listeners.append(_queue_smimea_update)
        return ca

    def _queue_revocation_notice(self, session: Session, record: CertificateRecord) -> None:
        """A CA listener: the subscriber is told of the revocation by mail (outbox)."""
        from mailpki.enrollment.notices import queue_revocation_notice

        if (
            not is_issuing_label(record.issuer)
            or not record.email
            or record.profile == OCSP_PROFILE
        ):
            return
        queue_revocation_notice(
            session,
            mail=record.email,
            serial=show_serial(record.serial),
            reason=record.revocation_reason,
            revoked_at=record.revoked_at or datetime.now(UTC),
            org=str(self.config.get("instance.org")),
            portal_url=str(self.config.get("web.base_url")),
            theme=self.home / THEME_DIR,
        )

    # -- directories, logon, approval ---------------------------------------------------

    @cached_property
    def directories(self) -> DirectoryRegistry:
        return DirectoryRegistry(self.db, read_db=self.read_db)

    @cached_property
    def publisher(self) -> Publisher:
        from mailpki.directory.publisher import Publisher

        return Publisher(
            self.db,
            self.directories,
            issuer=self.hierarchy.issuing.subject,
            earlier_issuers=tuple(c.subject for c in self.hierarchy.earlier),
        )

    def publish_pending(self) -> None:
        """Deliver due directory jobs and SMIMEA updates now, best effort (they stay
        queued on failure)."""
        from mailpki.directory.publisher import safe_run
        from mailpki.dns.publisher import safe_run as safe_dns_run

        safe_run(self.publisher)
        try:
            dns_publisher = self.dns_publisher
        except ConfigError:
            return  # a broken dns.* setting: the jobs wait; 'dns sync' names the problem
        if dns_publisher is not None:
            safe_dns_run(dns_publisher)

    @cached_property
    def dns_settings(self) -> DnsSettings | None:
        """SMIMEA update settings (`dns.*`); None when dns.update_server is empty."""
        return dns_settings_from(self.config)

    @cached_property
    def dns_publisher(self) -> DnsPublisher | None:
        from mailpki.dns.publisher import DnsPublisher

        settings = self.dns_settings
        if settings is None:
            return None
        return DnsPublisher(self.db, settings, certificates_of=self.ca.valid_certificates)

    @property
    def approval_rules(self) -> ApprovalRules:
        domains = str(self.config.get("approval.allowed_domains")) or str(
            self.config.get("instance.domain")
        )
        groups = str(self.config.get("approval.required_groups"))
        return ApprovalRules(
            auto=self.config.get("approval.auto") == "true",
            allowed_domains=tuple(d.strip() for d in domains.split(",") if d.strip()),
            required_groups=tuple(g.strip() for g in groups.split(",") if g.strip()),
        )

    @cached_property
    def approvals(self) -> ApprovalQueue:
        from mailpki.enrollment.requests import ApprovalQueue

        return ApprovalQueue(
            self.db,
            self.audit,
            self.approval_rules,
            portal_url=str(self.config.get("web.base_url")),
        )

    @cached_property
    def login_limiter(self) -> LoginLimiter:
        from mailpki.auth.limiter import LoginLimiter

        return LoginLimiter(
            self.db,
            max_failures=int(self.config.get("auth.max_failures")),
            lockout=timedelta(minutes=int(self.config.get("auth.lockout_minutes"))),
        )

    @cached_property
    def directory_logon(self) -> DirectoryAuthenticator:
        from mailpki.auth.directory_logon import DirectoryAuthenticator

        return DirectoryAuthenticator(
            find=self.directories.find_by_login,
            verify=self.directories.verify_password,
            limiter=self.login_limiter,
        )

    @cached_property
    def sealer(self) -> SecretSealer:
        """Seals small secrets kept in the database (operators' TOTP secrets) under the
        instance secret; it is read when first needed."""
        from mailpki.keystore.sealed import SecretSealer

        return SecretSealer(lambda: store_secret(self.config))

    @cached_property
    def operator_logon(self) -> OperatorAuthenticator:
        """Local operator accounts of the console (password and TOTP code)."""
        from mailpki.auth.operators import OperatorAuthenticator

        return OperatorAuthenticator(self.db, self.login_limiter, self.sealer)

    @property
    def kerberos_enabled(self) -> bool:
        """Kerberos single sign-on is offered (auth.kerberos.keytab is set)."""
        return bool(str(self.config.get("auth.kerberos.keytab")))

    @cached_property
    def kerberos_logon(self) -> KerberosAuthenticator:
        """Negotiate logon with the keytab's service key (ConfigError if not set up)."""
        from mailpki.auth.kerberos import KerberosAuthenticator, NegotiateAcceptor

        service = str(self.config.get("auth.kerberos.service"))
        if not self.kerberos_enabled or not service:
            raise ConfigError(
                "Kerberos logon needs auth.kerberos.keytab and auth.kerberos.service "
                "('mailpki config set KEY VALUE')"
            )
        acceptor = NegotiateAcceptor(self.config.path_of("auth.kerberos.keytab"), service)
        return KerberosAuthenticator(
            accept=acceptor.accept,
            find=self.directories.find_by_principal,
            limiter=self.login_limiter,
        )

    @cached_property
    def pin_logon(self) -> PinAuthenticator:
        from mailpki.auth.pins import PinAuthenticator

        return PinAuthenticator(
            self.db,
            self.login_limiter,
            max_attempts=int(self.config.get("pins.max_attempts")),
            lookup_mail=self.directories.find_by_mail,
        )

    # -- key manager, recovery service, mail ---------------------------------------------

    @cached_property
    def recovery_client(self) -> RecoveryClient:
        from mailpki.recovery.client import client_for

        url = str(self.config.get("recovery.url"))
        home = str(self.config.get("recovery.home"))
        return client_for(url=url, home=self.config.path_of("recovery.home") if home else None)

    @cached_property
    def transport_key(self) -> TransportKey:
        """The recovery service's public keys as pinned at init/connect/rewrap (never
        re-fetched here); the id covers the ML-KEM key too when there is one."""
        from mailpki.keystore.recovery_block import TransportKey

        path = self.home / RECOVERY_DIR / TRANSPORT_KEY_FILE
        try:
            pem = path.read_bytes()
        except OSError:
            raise ConfigError(
                f"{self.home} has no key recovery service pinned ({path} is missing): run "
                "'mailpki recovery connect' (keys cannot be delivered without escrow)"
            ) from None
        mlkem_path = self.home / RECOVERY_DIR / TRANSPORT_MLKEM_KEY_FILE
        try:
            mlkem_pem: bytes | None = mlkem_path.read_bytes()
        except FileNotFoundError:
            mlkem_pem = None  # a service from before the hybrid wrap: RSA-OAEP only
        except OSError as exc:
            raise ConfigError(f"cannot read {mlkem_path}: {exc.strerror}") from None
        key = TransportKey.from_pem(
            pem,
            str(self.config.get("recovery.oaep_hash")),
            mlkem_pem=mlkem_pem,
            wrap=str(self.config.get("recovery.wrap")),
        )
        pinned = str(self.config.get("recovery.transport_key_id")) or str(
            self.config.get("recovery.service_id")
        )
        if key.key_id != pinned:
            raise ConfigError(
                f"the pinned recovery key {path} does not match recovery.service_id; "
                "someone replaced it: re-run 'mailpki recovery connect' after checking"
            )
        return key

    @cached_property
    def key_manager(self) -> KeyManager:
        from mailpki.keymanager.manager import KeyManager

        return KeyManager(
            self.db,
            self.transport_key,
            pool_cipher=self._pool_cipher if self.config.get("keymanager.pool_salt") else None,
            delivery_lease=timedelta(
                seconds=int(self.config.get("keymanager.delivery_lease_seconds"))
            ),
        )

    def _pool_cipher(self) -> PoolCipher:
        from mailpki.keymanager.manager import PoolCipher

        salt = str(self.config.get("keymanager.pool_salt"))
        return PoolCipher(store_secret(self.config), bytes.fromhex(salt))

    @property
    def mail_settings(self) -> MailSettings:
        return mail_settings_from(
            self.config, default_sender=f"pki@{self.config.get('instance.domain')}"
        )

    # -- operations that belong to the instance itself ----------------------------------

    def audit_public_key(self) -> PublicKeyTypes:
        path = self.home / CA_DIR / AUDIT_PUBLIC_KEY
        try:
            return load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise InstanceError(f"cannot read the audit public key {path}: {exc}") from None

    def audit_keys(self) -> AuditKeys:
        """The public audit keys (ECDSA, and ML-DSA-65 once made)."""
        return audit_keys(self.home / CA_DIR)

    def verify_audit(self) -> VerifyReport:
        from mailpki.audit import verify_log

        keys = self.audit_keys()
        with self.db.session() as session:
            return verify_log(session, keys.classic, keys.mldsa)

    def verify_recovery_audit(self) -> VerifyReport | None:
        """The embedded recovery service's own log; None when the service runs apart."""
        if not self.recovery_client.is_local:
            return None
        return self.recovery_client.local_service().verify_audit()

    def set_config(self, key: str, value: str, *, actor: str) -> object:
        """Change one setting; the change is audited before the file is replaced."""
        old = {name: current for name, current, _ in self.config.items()}.get(key)
        if key == "ca.default_profile":
            load_profile(
                value.strip(), self.home / PROFILES_DIR
            )  # ProfileError names the known ones
        new = self.config.set(key, value)
        with self.db.transaction() as session:
            self.audit.append(
                session,
                "config.changed",
                actor=actor,
                data={"key": key, "old": _plain(old), "new": _plain(new)},
            )
            self.config.save()
        return new

    def seal(self) -> None:
        """Sign a checkpoint over the audit log's head, so what happened so far is sealed;
        then run the `after_seal` hooks (they must not raise)."""
        with self.db.transaction() as session:
            self.audit.checkpoint(session)
        for hook in self.after_seal:
            hook(self)

    def chain_pem(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return b"".join(
            cert.public_bytes(Encoding.PEM)
            for cert in (
                *reversed(self.hierarchy.earlier),
                self.hierarchy.issuing,
                self.hierarchy.root,
            )
        )

    def close(self) -> None:
        self.closed = True
        if "db" in self.__dict__:
            self.db.dispose()
        if self.__dict__.get("read_routing") is not None:
            self.read_routing.dispose()  # type: ignore[union-attr]
        if "recovery_client" in self.__dict__:
            self.recovery_client.close()
        if "directories" in self.__dict__:
            self.directories.close()


def _queue_publication(action: str) -> Callable[[Session, CertificateRecord], None]:
    """A CA listener that queues a directory job for subscriber certificates."""

    def listener(session: Session, record: CertificateRecord) -> None:
        from mailpki.directory.publisher import queue_job

        if is_issuing_label(record.issuer) and record.email and record.profile != OCSP_PROFILE:
            queue_job(session, serial=record.serial, email=record.email, action=action)

    return listener


def _queue_smimea_update(session: Session, record: CertificateRecord) -> None:
    """A CA listener that queues an SMIMEA update for a subscriber certificate's address."""
    from mailpki.dns.publisher import queue_update

    if is_issuing_label(record.issuer) and record.email and record.profile != OCSP_PROFILE:
        queue_update(session, serial=record.serial, email=record.email)


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | bool) or value is None else str(value)
