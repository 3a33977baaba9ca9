"""The certificate policy manager: profiles, naming and key rules (no I/O)."""
