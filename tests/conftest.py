"""Top-level fixtures: the real test services (see tests/services.py, contrib/test-services.sh)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.services import (
    START_HINT,
    TestServices,
    clamd_problem,
    dns_problem,
    load_services,
    pg_problem,
    services_required,
    spamd_prefs_problem,
    spamd_problem,
)


def _require(svc: TestServices, check: Callable[[TestServices], str | None]) -> None:
    problem = check(svc)
    if problem is None:
        return
    if services_required():
        pytest.fail(f"{problem} (CI/MAILGUARD_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(f"{problem} ({START_HINT})")  # MAILGUARD_REQUIRE_SERVICES: fail instead


@pytest.fixture(scope="session")
def services() -> TestServices:
    """Addresses of the real services, from MAILGUARD_TEST_* or <test dir>/services.env."""
    return load_services()


@pytest.fixture(scope="session")
def pg_url(services: TestServices) -> str:
    """SQLAlchemy URL (postgresql+asyncpg://...) of the empty `mailguard_test` database."""
    _require(services, pg_problem)
    return services.pg_url


@pytest.fixture(scope="session")
def clamd_socket(services: TestServices) -> str:
    """Path of clamd's unix socket."""
    _require(services, clamd_problem)
    return services.clamd_socket


@pytest.fixture(scope="session")
def spamd_addr(services: TestServices) -> tuple[str, int]:
    """(host, port) of spamd over TCP."""
    _require(services, spamd_problem)
    assert services.spamd_tcp is not None
    return services.spamd_tcp


@pytest.fixture(scope="session")
def spamd_prefs(services: TestServices) -> str:
    """Path of spamd's SQLite user-preferences database (table `userpref`)."""
    _require(services, spamd_prefs_problem)
    return services.spamd_prefs


@pytest.fixture(scope="session")
def dns_server(services: TestServices) -> tuple[str, int]:
    """(host, port) of the test DNS server (rbldnsd, UDP): bl.test, bl2.test, dbl.test, spf.test."""
    _require(services, dns_problem)
    assert services.dns is not None
    return services.dns


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under CI (or MAILGUARD_REQUIRE_SERVICES) a skip is a failure: a test skipped for a
    missing tool (tcpserver, socat, stunnel4, systemd-analyze...) must not pass quietly."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and services_required() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI requires every service and tool: {report.longrepr}"
