"""The reliability suite: `python -m benchmarks.reliability` runs every check_*.py module.

Each module has ``main() -> int`` and prints lines "LABEL: N tried, N detected" (or
"N refused"); the suite exits non-zero if any line is below 100 %.
"""
