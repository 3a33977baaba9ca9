"""Portal sessions and one-time downloads: lifetimes, rotation, hostile tokens, races."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from mailpki.enrollment.portal_store import (
    MAX_SESSION_BYTES,
    DownloadStore,
    SessionStore,
    StoredDownload,
    check_handle,
)
from mailpki.errors import InputError, NotFoundError
from mailpki.store.db import Database
from mailpki.store.models import PortalDownload, PortalSession

PAYLOAD = b"PKCS12-PLAINTEXT-" + bytes(range(256)) * 8


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/portal.db")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def sessions(db: Database) -> SessionStore:
    return SessionStore(db, idle=timedelta(minutes=15), absolute=timedelta(hours=2))


@pytest.fixture
def downloads(db: Database) -> DownloadStore:
    return DownloadStore(db, lifetime=timedelta(minutes=15))


def _digest(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _set_session(db: Database, token: str, **values: datetime) -> None:
    with db.transaction() as session:
        session.execute(
            update(PortalSession).where(PortalSession.id_sha256 == _digest(token)).values(**values)
        )


def _session_row(db: Database, token: str) -> PortalSession | None:
    with db.session() as session:
        row = session.get(PortalSession, _digest(token))
        if row is not None:
            session.expunge(row)
        return row


def _download_row(db: Database, handle: str) -> PortalDownload | None:
    with db.session() as session:
        row = session.get(PortalDownload, _digest(handle))
        if row is not None:
            session.expunge(row)
        return row


def _set_download(db: Database, handle: str, **values: object) -> None:
    with db.transaction() as session:
        session.execute(
            update(PortalDownload)
            .where(PortalDownload.id_sha256 == _digest(handle))
            .values(**values)
        )


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _count(db: Database, model: type) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# -- sessions ------------------------------------------------------------------------------


def test_create_then_load_returns_the_data(sessions: SessionStore) -> None:
    token = sessions.create({"csrf": "c", "identity": {"login": "alice"}})
    assert check_handle(token) == token
    assert sessions.load(token) == {"csrf": "c", "identity": {"login": "alice"}}


def test_the_database_holds_only_the_hash_of_the_token(
    sessions: SessionStore, db: Database
) -> None:
    token = sessions.create({"csrf": "c"})
    with db.session() as session:
        ids = list(session.scalars(select(PortalSession.id_sha256)))
    assert ids == [_digest(token)]
    assert token not in ids[0]


def test_save_replaces_the_data(sessions: SessionStore) -> None:
    token = sessions.create({"csrf": "c"})
    sessions.save(token, {"csrf": "c", "downloads": [1, 2]})
    assert sessions.load(token) == {"csrf": "c", "downloads": [1, 2]}


def test_save_to_an_unknown_token_creates_nothing(sessions: SessionStore, db: Database) -> None:
    sessions.save(secrets.token_urlsafe(32), {"csrf": "x"})
    assert _count(db, PortalSession) == 0


def test_rotate_kills_the_old_token_at_once(sessions: SessionStore) -> None:
    old = sessions.create({"csrf": "anonymous"})
    new = sessions.rotate(old, {"csrf": "fresh", "identity": {"login": "alice"}})
    assert new != old
    assert sessions.load(old) is None
    assert sessions.load(new) == {"csrf": "fresh", "identity": {"login": "alice"}}


@pytest.mark.parametrize("old", [None, "", "not-a-token", "A" * 44])
def test_rotate_without_a_usable_old_token_just_creates(
    sessions: SessionStore, db: Database, old: str | None
) -> None:
    other = sessions.create({"csrf": "other"})
    new = sessions.rotate(old, {"csrf": "n"})
    assert sessions.load(new) == {"csrf": "n"}
    assert sessions.load(other) == {"csrf": "other"}  # nobody else's session is touched
    assert _count(db, PortalSession) == 2


def test_delete_ends_the_session(sessions: SessionStore, db: Database) -> None:
    token = sessions.create({"csrf": "c"})
    sessions.delete(token)
    assert sessions.load(token) is None
    assert _count(db, PortalSession) == 0


def test_idle_session_expires_and_is_removed(sessions: SessionStore, db: Database) -> None:
    token = sessions.create({"csrf": "c"})
    _set_session(db, token, seen_at=datetime.now(UTC) - timedelta(minutes=15, seconds=1))
    assert sessions.load(token) is None
    assert _session_row(db, token) is None


def test_absolute_lifetime_ends_an_active_session(sessions: SessionStore, db: Database) -> None:
    token = sessions.create({"csrf": "c"})
    # Seen a moment ago (not idle), but past its absolute end.
    _set_session(
        db,
        token,
        seen_at=datetime.now(UTC),
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert sessions.load(token) is None
    assert _session_row(db, token) is None


def test_tiny_lifetimes_expire_for_real(db: Database) -> None:
    store = SessionStore(db, idle=timedelta(microseconds=1), absolute=timedelta(hours=1))
    token = store.create({"csrf": "c"})
    assert store.load(token) is None
    store = SessionStore(db, idle=timedelta(hours=1), absolute=timedelta(microseconds=1))
    token = store.create({"csrf": "c"})
    assert store.load(token) is None


def test_load_restarts_the_idle_clock_at_most_once_a_minute(
    sessions: SessionStore, db: Database
) -> None:
    token = sessions.create({"csrf": "c"})
    recent = datetime.now(UTC) - timedelta(seconds=30)
    _set_session(db, token, seen_at=recent)
    assert sessions.load(token) is not None
    row = _session_row(db, token)
    assert row is not None and _aware(row.seen_at) == recent  # no write within a minute

    old = datetime.now(UTC) - timedelta(minutes=14)
    _set_session(db, token, seen_at=old)
    assert sessions.load(token) is not None
    row = _session_row(db, token)
    assert row is not None and _aware(row.seen_at) > datetime.now(UTC) - timedelta(seconds=10)


def test_activity_does_not_extend_the_absolute_lifetime(
    sessions: SessionStore, db: Database
) -> None:
    token = sessions.create({"csrf": "c"})
    before = _session_row(db, token)
    _set_session(db, token, seen_at=datetime.now(UTC) - timedelta(minutes=5))
    sessions.load(token)
    sessions.save(token, {"csrf": "d"})
    after = _session_row(db, token)
    assert before is not None and after is not None
    assert after.expires_at == before.expires_at


def test_purge_expired_removes_only_dead_sessions(sessions: SessionStore, db: Database) -> None:
    live = sessions.create({"csrf": "live"})
    idle = sessions.create({"csrf": "idle"})
    ended = sessions.create({"csrf": "ended"})
    _set_session(db, idle, seen_at=datetime.now(UTC) - timedelta(hours=1))
    _set_session(db, ended, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert sessions.purge_expired() == 2
    assert sessions.load(live) == {"csrf": "live"}
    assert _count(db, PortalSession) == 1


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "A" * 42,
        "A" * 44,
        "!" * 43,
        "é" * 43,
        "A" * 42 + "=",
        "A" * 43 + "\n",
        " " + "A" * 42,
        "A" * 21 + "\x00" + "A" * 21,
        "../" * 20,
        "A" * 100_000,
        12345,
        b"A" * 43,
        ["A" * 43],
    ],
)
def test_malformed_tokens_load_nothing_and_raise_nothing(
    sessions: SessionStore, token: object
) -> None:
    sessions.create({"csrf": "c"})
    assert sessions.load(token) is None  # type: ignore[arg-type]


def test_a_well_formed_unknown_token_loads_nothing(sessions: SessionStore) -> None:
    sessions.create({"csrf": "c"})
    assert sessions.load(secrets.token_urlsafe(32)) is None


def test_the_hash_of_a_token_is_not_a_token(sessions: SessionStore) -> None:
    """Someone holding a copy of the table (hex digests, 64 chars) opens nothing."""
    token = sessions.create({"csrf": "c"})
    digest = _digest(token)
    assert sessions.load(digest) is None
    assert sessions.load(digest[:43]) is None


def test_oversized_session_data_is_refused(sessions: SessionStore, db: Database) -> None:
    with pytest.raises(InputError):
        sessions.create({"blob": "x" * (MAX_SESSION_BYTES + 1)})
    assert _count(db, PortalSession) == 0
    token = sessions.create({"csrf": "c"})
    with pytest.raises(InputError):
        sessions.save(token, {"csrf": "c", "blob": "x" * MAX_SESSION_BYTES})
    assert sessions.load(token) == {"csrf": "c"}  # the old data survives


def test_session_data_just_under_the_limit_is_kept(sessions: SessionStore) -> None:
    data = {"b": "x" * (MAX_SESSION_BYTES - 16)}
    token = sessions.create(data)
    assert sessions.load(token) == data


def test_tokens_are_unique_and_unpredictable(sessions: SessionStore) -> None:
    tokens = {sessions.create({}) for _ in range(50)}
    assert len(tokens) == 50
    assert all(check_handle(t) for t in tokens)


# -- downloads -----------------------------------------------------------------------------


def _put(store: DownloadStore, token: str, *, serial: str = "0a1b", data: bytes = PAYLOAD) -> str:
    return store.put(
        token, serial=serial, email="alice@example.com", filename="alice.p12", data=data
    )


def test_put_then_take_once(downloads: DownloadStore) -> None:
    token = secrets.token_urlsafe(32)
    handle = _put(downloads, token)
    assert check_handle(handle) == handle
    taken = downloads.take(handle, token)
    assert taken == StoredDownload(
        serial="0a1b", email="alice@example.com", filename="alice.p12", data=PAYLOAD
    )
    with pytest.raises(NotFoundError):
        downloads.take(handle, token)


def test_another_sessions_take_fails_and_does_not_burn_the_link(
    downloads: DownloadStore,
) -> None:
    owner, thief = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    handle = _put(downloads, owner)
    with pytest.raises(NotFoundError) as stolen:
        downloads.take(handle, thief)
    assert downloads.take(handle, owner).data == PAYLOAD
    with pytest.raises(NotFoundError) as again:
        downloads.take(handle, owner)
    # Nothing tells a prober which case it hit.
    assert str(stolen.value) == str(again.value)


def test_expired_download_fails(downloads: DownloadStore, db: Database) -> None:
    token = secrets.token_urlsafe(32)
    handle = _put(downloads, token)
    _set_download(db, handle, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(NotFoundError):
        downloads.take(handle, token)


def test_tiny_lifetime_download_expires(db: Database) -> None:
    store = DownloadStore(db, lifetime=timedelta(microseconds=1))
    token = secrets.token_urlsafe(32)
    handle = _put(store, token)
    with pytest.raises(NotFoundError):
        store.take(handle, token)


@pytest.mark.parametrize(
    "handle",
    ["", "short", "A" * 44, "!" * 43, "é" * 43, "A" * 43 + "\n", "../" * 15, None, 7],
)
def test_wrong_shape_handles_fail(downloads: DownloadStore, handle: object) -> None:
    token = secrets.token_urlsafe(32)
    _put(downloads, token)
    with pytest.raises(NotFoundError):
        downloads.take(handle, token)  # type: ignore[arg-type]


@pytest.mark.parametrize("session_token", ["", "x", "é" * 43, None, "A" * 44])
def test_wrong_shape_session_tokens_fail(downloads: DownloadStore, session_token: object) -> None:
    token = secrets.token_urlsafe(32)
    handle = _put(downloads, token)
    with pytest.raises(NotFoundError):
        downloads.take(handle, session_token)  # type: ignore[arg-type]
    assert downloads.take(handle, token).data == PAYLOAD


def test_unknown_handle_fails(downloads: DownloadStore) -> None:
    token = secrets.token_urlsafe(32)
    _put(downloads, token)
    with pytest.raises(NotFoundError):
        downloads.take(secrets.token_urlsafe(32), token)


def test_the_stored_blob_is_encrypted_and_emptied_after_take(
    downloads: DownloadStore, db: Database
) -> None:
    token = secrets.token_urlsafe(32)
    handle = _put(downloads, token)
    row = _download_row(db, handle)
    assert row is not None
    assert PAYLOAD not in row.blob
    assert b"PKCS12-PLAINTEXT" not in row.blob
    assert len(row.blob) == 12 + len(PAYLOAD) + 16  # nonce + ciphertext + GCM tag
    assert row.session_sha256 == _digest(token) and token not in row.session_sha256
    assert row.id_sha256 == _digest(handle)
    downloads.take(handle, token)
    row = _download_row(db, handle)
    assert row is not None
    assert row.blob == b""
    assert row.fetched_at is not None


def test_two_puts_of_one_file_differ(downloads: DownloadStore, db: Database) -> None:
    token = secrets.token_urlsafe(32)
    first, second = _put(downloads, token), _put(downloads, token)
    a, b = _download_row(db, first), _download_row(db, second)
    assert a is not None and b is not None
    assert a.blob != b.blob
    assert a.blob[:12] != b.blob[:12]  # fresh nonce


def test_rebinding_the_row_to_another_session_does_not_decrypt(
    downloads: DownloadStore, db: Database
) -> None:
    """An attacker with write access to the table who re-binds a download to their own
    session still cannot read it: the key derives from the owner's token."""
    owner, thief = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    handle = _put(downloads, owner)
    _set_download(db, handle, session_sha256=_digest(thief))
    with pytest.raises(NotFoundError):
        downloads.take(handle, thief)


def test_a_tampered_blob_is_refused(downloads: DownloadStore, db: Database) -> None:
    token = secrets.token_urlsafe(32)
    handle = _put(downloads, token)
    row = _download_row(db, handle)
    assert row is not None
    tampered = bytearray(row.blob)
    tampered[20] ^= 0x01
    _set_download(db, handle, blob=bytes(tampered))
    with pytest.raises(NotFoundError):
        downloads.take(handle, token)


def test_concurrent_takes_exactly_one_wins(downloads: DownloadStore) -> None:
    token = secrets.token_urlsafe(32)
    handle = _put(downloads, token)
    threads = 8
    barrier = threading.Barrier(threads)
    won: list[StoredDownload] = []
    lost: list[Exception] = []
    lock = threading.Lock()

    def take() -> None:
        barrier.wait()
        try:
            result = downloads.take(handle, token)
        except Exception as exc:
            with lock:
                lost.append(exc)
        else:
            with lock:
                won.append(result)

    workers = [threading.Thread(target=take) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert len(won) == 1 and won[0].data == PAYLOAD
    assert len(lost) == threads - 1
    assert all(isinstance(exc, NotFoundError) for exc in lost), lost


def test_expired_unfetched_and_forget(downloads: DownloadStore, db: Database) -> None:
    token = secrets.token_urlsafe(32)
    expired = _put(downloads, token, serial="e1")
    fetched_expired = _put(downloads, token, serial="f1")
    live = _put(downloads, token, serial="live")
    old_fetched = _put(downloads, token, serial="old")
    downloads.take(fetched_expired, token)
    downloads.take(old_fetched, token)
    past = datetime.now(UTC) - timedelta(seconds=1)
    _set_download(db, expired, expires_at=past)
    _set_download(db, fetched_expired, expires_at=past)
    _set_download(db, old_fetched, fetched_at=datetime.now(UTC) - timedelta(days=1, minutes=1))

    assert downloads.expired_unfetched() == ["e1"]  # fetched ones are never withdrawn
    downloads.forget(["e1", "f1"])
    assert _download_row(db, expired) is None
    assert _download_row(db, fetched_expired) is not None  # fetched: kept for a day
    assert _download_row(db, old_fetched) is None  # fetched over a day ago: dropped
    assert downloads.expired_unfetched() == []
    assert downloads.take(live, token).serial == "live"  # untouched by forget


def test_forget_with_no_serials_keeps_unfetched_rows(
    downloads: DownloadStore, db: Database
) -> None:
    token = secrets.token_urlsafe(32)
    handle = _put(downloads, token)
    _set_download(db, handle, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    downloads.forget([])
    assert _download_row(db, handle) is not None
