"""Private keys at rest: encrypted PKCS#8 files, a PKCS#11 token, key recovery blocks.

Shared by the CA (its signing keys) and the Key Recovery Service (its transport and
audit keys); neither needs to know which backend holds a key. `recovery_block` is the
escrow format the Key Manager seals and only the Key Recovery Service can open: the
contract between the two, kept here so neither imports the other.
"""
