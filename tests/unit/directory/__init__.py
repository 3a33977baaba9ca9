"""The directory port and its adapters."""
