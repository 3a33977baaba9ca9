"""Key Manager: central key generation, escrow before delivery, PKCS#12 (not built yet)."""
