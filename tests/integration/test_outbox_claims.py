"""Two senders flushing one outbox at once (two nodes) send every mail exactly once, on
SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from email.message import EmailMessage

from mailpki.notify.mail import MailSettings, deliver_pending, pending_count, queue
from mailpki.store.db import Database


class SlowTransport:
    """Records each message and takes a moment per send, so the senders overlap."""

    def __init__(self, sent: Counter[str], lock: threading.Lock) -> None:
        self.sent, self.lock = sent, lock

    def send(self, message: EmailMessage) -> None:
        time.sleep(0.01)
        with self.lock:
            self.sent[str(message["Subject"])] += 1


def test_two_flushing_nodes_never_send_a_mail_twice(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    try:
        with db.transaction() as session:
            for index in range(40):
                queue(
                    session, kind="test", to=f"p{index}@example.com", subject=f"m{index}", body="x"
                )
        sent: Counter[str] = Counter()
        lock = threading.Lock()
        settings = MailSettings(transport="smtp", sender="pki@example.com", smtp_host="127.0.0.1")
        nodes = [Database(database_url) for _ in range(3)]
        barrier = threading.Barrier(len(nodes))

        def node(node_db: Database) -> None:
            barrier.wait()
            while pending_count(node_db):
                deliver_pending(node_db, settings, transport=SlowTransport(sent, lock), limit=15)

        threads = [threading.Thread(target=node, args=(n,)) for n in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        for node_db in nodes:
            node_db.dispose()
        assert sorted(sent) == sorted(f"m{i}" for i in range(40))
        assert set(sent.values()) == {1}, [k for k, v in sent.items() if v > 1]
        assert pending_count(db) == 0
    finally:
        db.dispose()
