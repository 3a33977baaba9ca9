"""The certificate authority: keys, lint-before-sign issuance, revocation, CRLs, OCSP."""
