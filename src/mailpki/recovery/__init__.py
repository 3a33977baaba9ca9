"""Key Recovery Service: its own key, signed and approved recovery, audit (not built yet)."""
