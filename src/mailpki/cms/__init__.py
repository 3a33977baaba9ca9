"""CMS (RFC 5652) signed data: sign and verify, with the checks cryptography lacks."""
