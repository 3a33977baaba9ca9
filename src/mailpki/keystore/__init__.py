"""Private keys at rest: encrypted PKCS#8 files or a PKCS#11 token.

Shared by the CA (its signing keys) and the Key Recovery Service (its transport and
audit keys); neither needs to know which backend holds a key.
"""
