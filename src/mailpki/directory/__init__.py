"""The directory port and its LDAP / embedded adapters (not built yet)."""
