"""The store's fixtures (tests.postgres): tests that take `store_location` run on SQLite and on
a real PostgreSQL."""

from tests.postgres import postgres_server, store_location  # noqa: F401 - fixtures
