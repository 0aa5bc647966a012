"""Fixtures for end-to-end tests against a real `mailguard serve` process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import Client, Daemon, start_daemon

BASE_CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com", ".sub.example.net"]
relay_networks = ["127.0.0.2/32"]
badmailfrom = ["spammer@bad.test", "@evil.test"]
databytes = 5000
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with the base configuration, shared by a test module."""
    d = start_daemon(tmp_path_factory.mktemp("daemon"), BASE_CONFIG)
    yield d
    assert d.stop() == 0


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[list[Daemon]]:
    """For tests that need their own configuration: start with start_daemon(...) and
    append; every daemon is stopped at the end."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()



@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """connect(daemon, source=None) -> a Client, closed at the end of the test."""
    clients: list[Client] = []

    def make(d: Daemon, *, source: str | None = None, index: int = 0) -> Client:
        host, port = d.addresses[index]
        c = Client(host, port, source=source)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
