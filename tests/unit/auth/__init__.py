"""Authenticators and the logon limiter."""
