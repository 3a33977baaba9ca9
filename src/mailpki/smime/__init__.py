"""The S/MIME toolkit: sign, encrypt, verify, decrypt (not built yet)."""
