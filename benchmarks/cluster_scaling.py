"""Enrollments per second through HAProxy with 1, 2 and 3 nodes, and what each costs in CPU.

    python -m benchmarks.cluster_scaling                       # 1, 2, 3 nodes; 60 each
    python -m benchmarks.cluster_scaling --nodes 1,2 --enrollments 100 --clients 8

One throwaway PostgreSQL and instance (P-256 CA and subscriber keys, key pool filled, the
people and HR PINs in the embedded directory, an aiosmtpd mail server), then for each node
count: that many `mailpki serve` processes behind HAProxy (round robin) and
`--enrollments` portal enrollments (PIN logon, form, one-time PKCS#12 download) by
`--clients` threads. For each round it reports enrollments/s and, from /proc, the CPU
seconds that the nodes (each node's process tree), PostgreSQL (the postmaster's tree) and
HAProxy spent, divided by the completed enrollments.

On a machine with fewer cores than busy processes the rate cannot grow with the nodes;
the CPU seconds per enrollment are what carry over to bigger hosts:
enrollments/s on a host ≈ cores available to the nodes / node CPU s per enrollment (and
likewise for the database). docs/scaling.md works the estimate through.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks.bench_portal import Person, people, set_up
from benchmarks.soak_cluster import Mail, Outcome, Postgres, enroll, haproxy, nodes

_TICKS = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and its living descendants (and the
    children they have waited for)."""
    tree = _children()
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[11..14]: utime, stime, cutime, cstime (after the state field at 0)
        total += sum(int(x) for x in fields[11:15]) / _TICKS
        todo.extend(tree.get(pid, []))
    return total


def _postmaster(pg: Postgres) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


def _haproxy_pid(workdir: Path) -> int | None:
    """Ours: the one started with this run's own configuration file."""
    config = str(workdir / "haproxy.cfg")
    out = subprocess.run(["pgrep", "-f", config], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return min(pids) if pids else None


def one_round(
    home: Path, workdir: Path, pg: Postgres, count: int, group: list[Person], clients: int
) -> dict[str, Any]:
    outcome = Outcome()
    with nodes(home, count, workdir) as started, haproxy([p for p, _ in started], workdir) as front:
        time.sleep(2)  # let start-up housekeeping (pool, presigning) settle first
        pids = [proc.pid for _, proc in started]
        postmaster = _postmaster(pg)
        proxy = _haproxy_pid(workdir)
        node_before = [cpu_seconds(pid) for pid in pids]
        db_before = cpu_seconds(postmaster)
        proxy_before = cpu_seconds(proxy) if proxy else 0.0
        queue = list(group)
        random.shuffle(queue)
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    person = queue.pop()
                enroll(front, person, outcome)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - t0
        node_cpu = [
            cpu_seconds(pid) - before for pid, before in zip(pids, node_before, strict=True)
        ]
        db_cpu = cpu_seconds(postmaster) - db_before
        proxy_cpu = (cpu_seconds(proxy) - proxy_before) if proxy else 0.0
    done = max(outcome.completed, 1)
    result = {
        "nodes": count,
        "enrollments": len(group),
        "completed": outcome.completed,
        "refused": sum(outcome.refused.values()),
        "broken": sum(outcome.broken.values()) + outcome.interrupted,
        "seconds": round(seconds, 2),
        "enrollments_per_s": round(outcome.completed / seconds, 2),
        "node_cpu_s": [round(c, 2) for c in node_cpu],
        "node_cpu_s_per_enrollment": round(sum(node_cpu) / done, 4),
        "postgres_cpu_s_per_enrollment": round(db_cpu / done, 4),
        "haproxy_cpu_s_per_enrollment": round(proxy_cpu / done, 5),
    }
    common.log(
        f"{count} node(s): {result['enrollments_per_s']} enrollments/s "
        f"({outcome.completed}/{len(group)} in {seconds:.1f} s); CPU s per enrollment: "
        f"nodes {result['node_cpu_s_per_enrollment']}, PostgreSQL "
        f"{result['postgres_cpu_s_per_enrollment']}, HAProxy {result['haproxy_cpu_s_per_enrollment']}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="1,2,3", help="node counts, comma-separated")
    parser.add_argument("--enrollments", type=int, default=60, help="per node count")
    parser.add_argument("--clients", type=int, default=6, help="enrolling threads")
    args = common.parse_args(parser)
    counts = [int(n) for n in args.nodes.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit("--nodes wants counts of at least 1, e.g. 1,2,3")
    everyone = people(args.enrollments * len(counts))
    rounds = []
    with common.temp_dir("mailpki-scaling-") as workdir:
        pg = Postgres(workdir)
        url = pg.start()
        mail = Mail()
        mail.start()
        try:
            home = workdir / "home"
            common.create_instance(home, ca_key_type="p256", database_url=url)
            for key, value in (
                ("keymanager.key_type", "p256"),
                ("smtp.host", "127.0.0.1"),
                ("smtp.port", str(mail.port)),
            ):
                subprocess.run(
                    [sys.executable, "-m", "mailpki", "config", "set", "--home", str(home), key, value],
                    check=True, capture_output=True,
                )  # fmt: skip
            set_up(home, workdir, everyone, pool_target=20, fill=min(200, len(everyone)))
            for index, count in enumerate(counts):
                group = everyone[index * args.enrollments : (index + 1) * args.enrollments]
                rounds.append(one_round(home, workdir, pg, count, group, args.clients))
        finally:
            mail.stop()
            pg.stop()
    common.emit(
        {
            "benchmark": "cluster_scaling",
            "machine": common.machine(),
            "clients": args.clients,
            "rounds": rounds,
            "targets": [],
        }
    )


if __name__ == "__main__":
    main()
