"""Whether a database error is an outage (try again later) or a refused statement."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

# SQLite reports every kind of failure as OperationalError; these result codes (and their
# extended forms, e.g. SQLITE_IOERR_WRITE) are the ones that pass: busy or locked by
# another writer, a file that cannot be opened or read just now.
_SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR")


def is_outage(exc: SQLAlchemyError) -> bool:
    """A connection that failed or was cut, a server shutting down, a busy database:
    nothing was done and the same statement may succeed later. A missing table, a
    broken constraint or bad SQL is not an outage."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    name = getattr(exc.orig, "sqlite_errorname", None)
    if isinstance(name, str):
        return name.startswith(_SQLITE_TRANSIENT)
    return True  # PostgreSQL: connection failures, admin shutdown, lock and statement timeouts
