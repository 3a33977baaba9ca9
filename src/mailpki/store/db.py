"""Engine and session handling for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailpki.errors import StoreError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred and
        # would turn a read-then-write into a "database is locked" failure).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front so two writers never deadlock on upgrade.
        immediate = conn.get_execution_options().get("mailpki_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """One database: sessions for reading, transactions for writing."""

    def __init__(
        self, url: str, *, echo: bool = False, connect_args: dict[str, Any] | None = None
    ) -> None:
        self.url = url
        try:
            if _is_sqlite(url):
                self.engine = create_engine(url, echo=echo)
                _configure_sqlite(self.engine)
            else:
                self.engine = create_engine(
                    url,
                    echo=echo,
                    pool_pre_ping=True,
                    pool_size=10,
                    max_overflow=20,
                    connect_args=connect_args or {},
                )
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot use database URL {_safe(url)}: {exc}") from exc
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(mailpki_write=True), expire_on_commit=False
        )
        # PostgreSQL: lookups run without BEGIN and ROLLBACK around their statement. Under
        # READ COMMITTED every statement takes its own snapshot anyway, so this reads the
        # same rows, with one round trip for the statement instead of three (BEGIN, the
        # statement, ROLLBACK). SQLite has no round trips: its reads are left as they are.
        self._looker = (
            self._reader
            if _is_sqlite(url)
            else sessionmaker(
                self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )
        )

    @property
    def is_sqlite(self) -> bool:
        return _is_sqlite(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (no commit). A database error inside the block or while the
        session is closed (a connection cut by a restart) is a StoreError."""
        try:
            with self._reader() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}: {exc}") from exc

    @contextmanager
    def lookup(self) -> Iterator[Session]:
        """A read session for lookups that need no snapshot shared by their statements
        (the certificate directory, a search): on PostgreSQL each statement is its own
        transaction. Never write in it. Errors as for `session`."""
        try:
            with self._looker() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction: commits when the block ends normally, rolls back otherwise."""
        try:
            with self._writer() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}: {exc}") from exc

    def migrate(self) -> None:
        """Apply every Alembic migration (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate the database {_safe(self.url)}: {exc}") from exc

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None: not initialised)."""
        from sqlalchemy import text

        try:
            if not inspect(self.engine).has_table("alembic_version"):
                return None
            with self.engine.connect() as connection:
                row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot reach the database {_safe(self.url)}: {exc}") from exc
        return str(row[0]) if row else None

    def is_current(self) -> bool:
        """Whether the schema is at the newest migration this code ships."""
        return self.schema_revision() == head_revision()

    def is_initialised(self) -> bool:
        try:
            return inspect(self.engine).has_table("alembic_version")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot reach the database {_safe(self.url)}: {exc}") from exc

    def dispose(self) -> None:
        self.engine.dispose()


def head_revision() -> str:
    """The newest migration this code ships (what `migrate` brings a database to)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    if head is None:
        raise StoreError("the migrations have no single head")
    return head


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<malformed URL>"
