"""Thin HTTP layer: the PKI endpoints (CRLs, OCSP, CA certificates)."""
