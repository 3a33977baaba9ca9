"""Authenticators: directory logon, PIN / HR database (not built yet)."""
