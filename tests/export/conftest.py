"""Session-scoped PostgreSQL and nats-server for the exporter tests (tests/export/servers.py).

One PostgreSQL cluster serves the session (each test gets its own database); one nats-server too
(each test's stream is deleted after it). Tests that kill a server start their own.
"""

import asyncio
import itertools

import pytest

from tests.export.servers import NatsServer, PostgresServer, delete_stream
from tests.integration.conftest import make_node  # noqa: F401  (the node factory)

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def nats_server():
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(postgres):
    """A fresh database on the session's PostgreSQL."""
    return postgres.create_db(f"ledger_{next(_names)}")


@pytest.fixture
def nats_url(nats_server):
    """The session's nats-server; the stream ATS is deleted after the test."""
    yield nats_server.url
    asyncio.run(delete_stream(nats_server.url, "ATS"))
