"""Backup and restore of a whole instance: one archive, a manifest of hashes, signed.

The archive (a gzip'd tar) holds:
- `MANIFEST.json`: format, time, version, schema revision, the databases and every
  file with its SHA-256 and size; `MANIFEST.sig`: the manifest signed by the
  instance's audit key (its public key is in the archive, under `home/ca/`);
- `home/...`: the home folder as it is (settings, CA certificates, the CA, OCSP and
  audit key files as they are: encrypted PKCS#8), every SQLite database in it copied
  with SQLite's online backup API (a consistent copy while the server runs), and the
  embedded key recovery service (`home/krs/...`);
- `database/*.pgdump`: `pg_dump --format=custom` of each PostgreSQL database.

Never in it: the key passphrases and PKCS#11 PINs (`secrets/` folders and the files the
settings name), nor what lives in a PKCS#11 token. Those are kept apart, on purpose: an
archive that held both the encrypted keys and their passphrase would be the keys.

The recovery service is copied before the instance's database, so that every audit
checkpoint it witnessed is also in the copied log.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from mailpki import __version__
from mailpki.base.settings import SettingsFile
from mailpki.ca.setup import AUDIT_KEY
from mailpki.errors import InputError, MailPKIError
from mailpki.instance.config import CONFIG_FILE, Config
from mailpki.instance.instance import Instance
from mailpki.instance.layout import AUDIT_PUBLIC_KEY, CA_DIR
from mailpki.recovery.config import ServiceConfig
from mailpki.store.db import Database
from mailpki.store.snapshot import (
    check_sqlite_file,
    copy_sqlite,
    dump_postgres,
    is_sqlite_file,
    restore_postgres,
)

FORMAT = "mailpki-backup/1"
MANIFEST = "MANIFEST.json"
SIGNATURE = "MANIFEST.sig"
HOME_PREFIX = "home"
DATABASE_PREFIX = "database"
SECRETS_DIR = "secrets"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
SQLITE_PREFIX = "sqlite:///"
RESTORED_DATABASE = {"instance": "mailpki.db", "recovery": "krs.db"}
_SECRET_SETTINGS = ("keys.passphrase_file", "keys.pkcs11_pin_file")

Progress = Callable[[str], None]


class BackupError(MailPKIError):
    """A backup could not be made, or an archive cannot be restored."""


@dataclass(frozen=True)
class FileEntry:
    """One file of the archive: where it goes and what it must hash to."""

    path: str
    sha256: str
    size: int
    mode: int


@dataclass(frozen=True)
class DatabaseCopy:
    """One database in the archive: `role` is instance or recovery."""

    role: str
    kind: str  # sqlite | postgresql
    member: str  # the archive member holding it


@dataclass(frozen=True)
class Manifest:
    format: str
    created: str
    mailpki_version: str
    schema_revision: str
    databases: tuple[DatabaseCopy, ...]
    files: tuple[FileEntry, ...]
    folders: tuple[str, ...]
    excluded: tuple[str, ...]

    def to_bytes(self) -> bytes:
        data = asdict(self)
        return json.dumps(data, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise BackupError(
                    f"not a mailpki backup of a known format ({data.get('format')!r})"
                )
            return cls(
                format=str(data["format"]),
                created=str(data["created"]),
                mailpki_version=str(data["mailpki_version"]),
                schema_revision=str(data["schema_revision"]),
                databases=tuple(
                    DatabaseCopy(str(d["role"]), str(d["kind"]), str(d["member"]))
                    for d in data["databases"]
                ),
                files=tuple(
                    FileEntry(str(f["path"]), str(f["sha256"]), int(f["size"]), int(f["mode"]))
                    for f in data["files"]
                ),
                folders=tuple(str(f) for f in data["folders"]),
                excluded=tuple(str(e) for e in data["excluded"]),
            )
        except BackupError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"the archive's manifest is malformed ({exc})") from None


@dataclass(frozen=True)
class BackupSummary:
    archive: Path
    files: int
    size: int
    schema_revision: str
    excluded: tuple[str, ...]


@dataclass(frozen=True)
class RestoreSummary:
    home: Path
    files: int
    created: str
    signer_sha256: str
    schema_revision: str
    missing_secrets: tuple[str, ...]


# -- backup ---------------------------------------------------------------------------


def create_backup(
    instance: Instance, out: Path, *, actor: str, progress: Progress | None = None
) -> BackupSummary:
    """Write a consistent, signed archive of `instance` to `out` (all or nothing)."""
    say = progress or (lambda _message: None)
    home = instance.home.resolve()
    if out.resolve().is_relative_to(home):
        raise InputError(f"write the backup outside the home folder {home}, not into it")
    with instance.db.transaction() as session:
        # Recorded before the copy, so the restored log says when its backup was taken.
        instance.audit.append(session, "instance.backed_up", actor=actor, data={"to": out.name})
        instance.audit.checkpoint(session)
    revision = instance.db.schema_revision() or ""
    staging = Path(tempfile.mkdtemp(prefix=".mailpki-backup-", dir=out.parent))
    try:
        excluded = _secret_paths(home)
        recovery_home = _embedded_recovery_home(instance)
        sources = {"instance": instance.config.database_url}
        if recovery_home is not None:
            sources["recovery"] = ServiceConfig.load(recovery_home).database_url
        database_files = {
            Path(url.removeprefix(SQLITE_PREFIX)).resolve()
            for url in sources.values()
            if url.startswith(SQLITE_PREFIX)
        }
        databases: list[DatabaseCopy] = []
        # The recovery service first: every checkpoint it witnessed is then in the copied log.
        for role in ("recovery", "instance"):
            if role in sources:
                say(f"copying the {role} database")
                databases.append(_copy_database(role, sources[role], staging))
        say("copying the home folder")
        files = list(_copy_home(home, staging, excluded, skip=database_files))
        files.extend(_entry(staging, copy.member) for copy in databases)
        manifest = Manifest(
            format=FORMAT,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            mailpki_version=__version__,
            schema_revision=revision,
            databases=tuple(databases),
            files=tuple(sorted(files, key=lambda f: f.path)),
            folders=tuple(_folders(home)),
            excluded=tuple(sorted(_outermost(excluded))),
        )
        raw = manifest.to_bytes()
        signature = _sign(instance, raw)
        say("writing the archive")
        size = _write_archive(out, staging, raw, signature, manifest.files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BackupSummary(out, len(manifest.files), size, revision, manifest.excluded)


def _embedded_recovery_home(instance: Instance) -> Path | None:
    if str(instance.config.get("recovery.url")) or not str(instance.config.get("recovery.home")):
        return None
    path = instance.config.path_of("recovery.home").resolve()
    return path if (path / ServiceConfig.file_name).is_file() else None


def _secret_paths(home: Path) -> set[str]:
    """Home-relative paths never copied: secrets/ folders and passphrase or PIN files."""
    found: set[str] = set()
    configs: list[SettingsFile] = [Config.load(home)]
    for service_file in home.rglob(ServiceConfig.file_name):
        configs.append(ServiceConfig.load(service_file.parent))
    for config in configs:
        for key in _SECRET_SETTINGS:
            if str(config.get(key)):
                path = config.path_of(key).resolve()
                if path.is_relative_to(home):
                    found.add(path.relative_to(home).as_posix())
    for folder in home.rglob(SECRETS_DIR):
        if folder.is_dir():
            found.add(folder.relative_to(home).as_posix() + "/")
    return found


def _outermost(paths: set[str]) -> set[str]:
    """Drop the paths that an excluded folder already covers."""
    return {p for p in paths if not _is_excluded(p, {q for q in paths if q != p})}


def _folders(home: Path) -> list[str]:
    """Every folder of the home (empty ones too), so a restore recreates the layout."""
    return sorted(
        path.relative_to(home).as_posix()
        for path in home.rglob("*")
        if path.is_dir() and not path.is_symlink()
    )


def _is_excluded(relative: str, excluded: set[str]) -> bool:
    return any(
        relative == item or (item.endswith("/") and relative.startswith(item)) for item in excluded
    )


def _copy_home(
    home: Path, staging: Path, excluded: set[str], *, skip: set[Path]
) -> Iterator[FileEntry]:
    """Copy every file of `home` into staging/home, but for the secrets, the databases
    (copied apart, `skip`) and their SQLite side files."""
    paths = sorted(p for p in home.rglob("*") if p.is_file() and not p.is_symlink())
    side_files = {
        database.with_name(database.name + suffix)
        for database in skip
        for suffix in _SQLITE_SIDE_FILES
    }
    for path in paths:
        relative = path.relative_to(home).as_posix()
        if _is_excluded(relative, excluded) or path.resolve() in skip | side_files:
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue  # a half-written file of an atomic write
        member = f"{HOME_PREFIX}/{relative}"
        target = staging / member
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_sqlite_file(path):
            copy_sqlite(path, target)  # some other database kept in the home: copied live
        else:
            shutil.copyfile(path, target)
        os.chmod(target, path.stat().st_mode & 0o777)
        yield _entry(staging, member)


def _copy_database(role: str, url: str, staging: Path) -> DatabaseCopy:
    """SQLite through its online backup API, PostgreSQL through pg_dump."""
    (staging / DATABASE_PREFIX).mkdir(parents=True, exist_ok=True)
    if url.startswith(SQLITE_PREFIX):
        member = f"{DATABASE_PREFIX}/{role}.sqlite"
        copy_sqlite(Path(url.removeprefix(SQLITE_PREFIX)), staging / member)
        return DatabaseCopy(role, "sqlite", member)
    member = f"{DATABASE_PREFIX}/{role}.pgdump"
    dump_postgres(url, staging / member)
    return DatabaseCopy(role, "postgresql", member)


def _entry(staging: Path, member: str) -> FileEntry:
    path = staging / member
    return FileEntry(member, _sha256_file(path), path.stat().st_size, path.stat().st_mode & 0o777)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sign(instance: Instance, payload: bytes) -> bytes:
    signer = instance.keys.load(AUDIT_KEY)
    if isinstance(signer, ec.EllipticCurvePrivateKey):
        signature = signer.sign(payload, ec.ECDSA(hashes.SHA256()))
        algorithm = "ecdsa-sha256"
    elif isinstance(signer, rsa.RSAPrivateKey):
        signature = signer.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        algorithm = "rsa-pkcs1v15-sha256"
    else:  # pragma: no cover - the audit key is EC or RSA
        raise BackupError(f"cannot sign with an audit key of type {type(signer).__name__}")
    return json.dumps(
        {"algorithm": algorithm, "signature": base64.b64encode(signature).decode()}
    ).encode()


def _write_archive(
    out: Path, staging: Path, manifest: bytes, signature: bytes, files: tuple[FileEntry, ...]
) -> int:
    partial = out.with_name(f".{out.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add_bytes(tar, MANIFEST, manifest)
            _add_bytes(tar, SIGNATURE, signature)
            for entry in files:
                info = tar.gettarinfo(str(staging / entry.path), arcname=entry.path)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with (staging / entry.path).open("rb") as handle:
                    tar.addfile(info, handle)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out.stat().st_size


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(datetime.now(UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


# -- restore --------------------------------------------------------------------------


def restore_backup(
    archive: Path,
    home: Path,
    *,
    database_url: str | None = None,
    progress: Progress | None = None,
) -> RestoreSummary:
    """Check `archive` whole (every hash, the signature), then make `home` from it.

    Refuses a target that holds anything; on any failure what it made is removed.
    """
    say = progress or (lambda _message: None)
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise InputError(f"{home} is not empty: restore into a new folder")
    if not archive.is_file():
        raise InputError(f"{archive} does not exist or is not a file")
    existed = home.exists()
    staging = Path(tempfile.mkdtemp(prefix=".mailpki-restore-", dir=home.parent))
    try:
        say("checking the archive (every file's hash and the manifest's signature)")
        manifest, signer = _unpack_checked(archive, staging)
        say("putting the home folder in place")
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in manifest.folders:
            _safe_folder(home, folder).mkdir(parents=True, exist_ok=True, mode=0o700)
        for item in (staging / HOME_PREFIX).iterdir():
            if (home / item.name).is_dir() and item.is_dir():
                _merge_into(item, home / item.name)
                continue
            shutil.move(str(item), home / item.name)
        config = Config.load(home)
        for copy in manifest.databases:
            say(f"restoring the {copy.role} database")
            _restore_database(copy, staging / copy.member, home, config, database_url)
        revision = Database(config.database_url)
        try:
            at = revision.schema_revision() or ""
        finally:
            revision.dispose()
        if at != manifest.schema_revision:
            raise BackupError(
                f"the restored database is at schema {at!r}, the manifest says "
                f"{manifest.schema_revision!r}"
            )
    except BaseException:
        if existed:
            for item in home.iterdir():
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        else:
            shutil.rmtree(home, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    missing = tuple(item for item in manifest.excluded if _is_missing(home / item))
    return RestoreSummary(
        home=home,
        files=len(manifest.files),
        created=manifest.created,
        signer_sha256=signer,
        schema_revision=manifest.schema_revision,
        missing_secrets=missing,
    )


def _is_missing(path: Path) -> bool:
    """A left-out file that is not there, or a left-out folder that is empty."""
    if path.is_dir():
        return not any(path.iterdir())
    return not path.exists()


def _safe_folder(home: Path, folder: str) -> Path:
    path = PurePosixPath(folder)
    if path.is_absolute() or ".." in path.parts or not folder or any(ord(c) < 32 for c in folder):
        raise BackupError(f"the manifest names an unsafe folder: {folder!r}")
    return home / path


def _merge_into(source: Path, target: Path) -> None:
    """Move the content of `source` into the existing folder `target`."""
    for item in source.iterdir():
        if (target / item.name).is_dir() and item.is_dir():
            _merge_into(item, target / item.name)
        else:
            shutil.move(str(item), target / item.name)


def _restore_database(
    copy: DatabaseCopy, dump: Path, home: Path, config: Config, database_url: str | None
) -> None:
    """An SQLite copy becomes a file in the new home (the settings point at it); a
    PostgreSQL dump goes into the empty database the settings (or --database) name."""
    settings: SettingsFile = (
        config if copy.role == "instance" else ServiceConfig.load(config.path_of("recovery.home"))
    )
    if copy.kind == "sqlite":
        target = settings.home / RESTORED_DATABASE[copy.role]
        if target.exists():
            raise BackupError(f"the archive's home folder already holds {target.name}")
        shutil.move(str(dump), target)
        settings.set("database.url", SQLITE_PREFIX + target.name)
        settings.save()
        return
    if copy.kind != "postgresql":
        raise BackupError(f"the manifest names an unknown database kind {copy.kind!r}")
    if copy.role == "instance" and database_url:
        settings.set("database.url", database_url)
        settings.save()
    restore_postgres(settings.database_url, dump)


def _unpack_checked(archive: Path, staging: Path) -> tuple[Manifest, str]:
    """Extract into `staging` only what the manifest lists, checking each hash; refuse
    links, devices, odd names, duplicates, extra or missing members."""
    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"{archive} is not a readable backup archive: {exc}") from None
    try:
        with tar:
            manifest_raw, signature_raw = b"", b""
            seen: set[str] = set()
            expected: dict[str, FileEntry] | None = None
            for member in _members(tar):
                name = _safe_name(member)
                if name in seen:
                    raise BackupError(f"the archive holds {name} twice")
                seen.add(name)
                if name == MANIFEST:
                    manifest_raw = _read_member(tar, member, MAX_MANIFEST_BYTES)
                    expected = {f.path: f for f in Manifest.from_bytes(manifest_raw).files}
                    continue
                if name == SIGNATURE:
                    signature_raw = _read_member(tar, member, 64 * 1024)
                    continue
                if expected is None:
                    raise BackupError("the archive does not start with its manifest")
                entry = expected.get(name)
                if entry is None:
                    raise BackupError(f"the archive holds {name}, which its manifest does not list")
                _extract_checked(tar, member, entry, staging)
            if not manifest_raw or expected is None:
                raise BackupError("the archive has no manifest: not a mailpki backup")
            missing = sorted(set(expected) - seen)
            if missing:
                raise BackupError(
                    f"the archive is incomplete: {len(missing)} file(s) missing, e.g. {missing[0]}"
                )
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BackupError(f"{archive} is damaged: {exc}") from None
    manifest = Manifest.from_bytes(manifest_raw)
    signer = _check_signature(staging, manifest_raw, signature_raw)
    for copy in manifest.databases:
        if copy.role not in RESTORED_DATABASE:
            raise BackupError(f"the manifest names an unknown database {copy.role!r}")
        if copy.kind == "sqlite":
            check_sqlite_file(staging / copy.member)
    if not (staging / HOME_PREFIX / CONFIG_FILE).is_file():
        raise BackupError(f"the archive holds no {CONFIG_FILE}: not an instance backup")
    return manifest, signer


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        member = tar.next()
        if member is None:
            return
        yield member


def _safe_name(member: tarfile.TarInfo) -> str:
    if not member.isfile():
        raise BackupError(f"the archive holds {member.name!r}, which is not a plain file")
    path = PurePosixPath(member.name)
    if (
        path.is_absolute()
        or ".." in path.parts
        or member.name != path.as_posix()
        or any(ord(c) < 32 for c in member.name)
    ):
        raise BackupError(f"the archive holds a file with an unsafe name: {member.name!r}")
    if member.name not in (MANIFEST, SIGNATURE) and path.parts[0] not in (
        HOME_PREFIX,
        DATABASE_PREFIX,
    ):
        raise BackupError(f"the archive holds an unexpected file: {member.name!r}")
    return member.name


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise BackupError(f"{member.name} in the archive is too large ({member.size} bytes)")
    handle = tar.extractfile(member)
    if handle is None:
        raise BackupError(f"cannot read {member.name} from the archive")
    return handle.read(limit + 1)


def _extract_checked(
    tar: tarfile.TarFile, member: tarfile.TarInfo, entry: FileEntry, staging: Path
) -> None:
    if member.size != entry.size:
        raise BackupError(
            f"{entry.path} has {member.size} bytes in the archive, its manifest says {entry.size}"
        )
    handle = tar.extractfile(member)
    if handle is None:
        raise BackupError(f"cannot read {entry.path} from the archive")
    target = staging / entry.path
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != entry.sha256:
        raise BackupError(
            f"{entry.path} does not match its hash in the manifest: tampered or damaged"
        )
    os.chmod(target, entry.mode & 0o700 | (entry.mode & 0o044))


def _check_signature(staging: Path, manifest_raw: bytes, signature_raw: bytes) -> str:
    """Verify the manifest's signature with the archive's audit public key (itself covered
    by the manifest); return that key's SHA-256 fingerprint."""
    key_path = staging / HOME_PREFIX / CA_DIR / AUDIT_PUBLIC_KEY
    if not signature_raw:
        raise BackupError("the archive's manifest is not signed")
    try:
        public = load_pem_public_key(key_path.read_bytes())
        sig: dict[str, Any] = json.loads(signature_raw)
        signature = base64.b64decode(str(sig["signature"]), validate=True)
        algorithm = str(sig["algorithm"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"cannot check the manifest's signature: {exc}") from None
    try:
        if algorithm == "ecdsa-sha256" and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, manifest_raw, ec.ECDSA(hashes.SHA256()))
        elif algorithm == "rsa-pkcs1v15-sha256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, manifest_raw, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise BackupError(f"the manifest's signature algorithm {algorithm!r} is not known")
    except InvalidSignature:
        raise BackupError("the manifest's signature does not verify: tampered") from None
    spki = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()
