"""The registration authority: the enrollment flow, step by step (not built yet)."""
