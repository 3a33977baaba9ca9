"""Shared pytest setup: fixture plugins for the real servers the tests start."""

pytest_plugins = [
    "tests.fixtures.ci_policy",
    "tests.fixtures.softhsm",
    "tests.fixtures.postgres",
    "tests.fixtures.postgres_replica",
    "tests.fixtures.smtp",
    "tests.fixtures.slapd",
    "tests.fixtures.console_users",
    "tests.fixtures.kdc",
    "tests.fixtures.oidc",
    "tests.fixtures.dns_servers",
]
