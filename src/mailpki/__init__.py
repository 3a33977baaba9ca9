"""mailpki: a self-hosted S/MIME PKI for an organisation."""

__version__ = "0.1.0"
