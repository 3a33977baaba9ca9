"""Run every benchmarks/reliability/check_*.py in turn; exit non-zero if any fell short."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks.reliability as package


def main() -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("check_")
    )
    if not names:
        print("no check_*.py modules found", file=sys.stderr)
        return 1
    failed: list[str] = []
    for name in names:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"{package.__name__}.{name}")
        code = int(module.main())
        print(f"== {name}: {'ok' if code == 0 else 'FAILED'} ({time.monotonic() - started:.0f} s)")
        if code != 0:
            failed.append(name)
    if failed:
        print(f"reliability suite: {len(failed)} check(s) fell short: {', '.join(failed)}")
        return 1
    print("reliability suite: every check at 100 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
