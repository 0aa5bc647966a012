"""Where the real test services (contrib/test-services.sh) live, and whether they answer.

Plain functions and a dataclass; the pytest fixtures in tests/conftest.py are thin wrappers.
Values come from the ``MAILGUARD_TEST_*`` environment variables, or, when those are absent,
from ``${MAILGUARD_TEST_DIR:-/tmp/mailguard-test}/services.env`` written by
``contrib/test-services.sh start``.
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

DEFAULT_TEST_DIR = "/tmp/mailguard-test"
START_HINT = (
    "start them with contrib/test-services.sh start; "
    "MAILGUARD_REQUIRE_SERVICES=1 makes this a failure"
)

ENV_PG_URL = "MAILGUARD_TEST_PG_URL"
ENV_CLAMD_SOCKET = "MAILGUARD_TEST_CLAMD_SOCKET"
ENV_CLAMD_TCP = "MAILGUARD_TEST_CLAMD_TCP"
ENV_SPAMD_TCP = "MAILGUARD_TEST_SPAMD_TCP"
ENV_SPAMD_SOCKET = "MAILGUARD_TEST_SPAMD_SOCKET"
ENV_SPAMD_PREFS = "MAILGUARD_TEST_SPAMD_PREFS"
ENV_DNS = "MAILGUARD_TEST_DNS"
SERVICE_VARS = (
    ENV_PG_URL,
    ENV_CLAMD_SOCKET,
    ENV_CLAMD_TCP,
    ENV_SPAMD_TCP,
    ENV_SPAMD_SOCKET,
    ENV_SPAMD_PREFS,
    ENV_DNS,
)

CONNECT_TIMEOUT = 1.0


@dataclass(frozen=True)
class TestServices:
    """Addresses of the real services; empty/None when not configured."""

    __test__ = False  # not a test class, despite the name

    pg_url: str
    clamd_socket: str
    clamd_tcp: tuple[str, int] | None
    spamd_tcp: tuple[str, int] | None
    spamd_socket: str
    spamd_prefs: str
    dns: tuple[str, int] | None


def state_dir() -> Path:
    """The directory contrib/test-services.sh keeps its state and services.env in."""
    return Path(os.environ.get("MAILGUARD_TEST_DIR") or DEFAULT_TEST_DIR)


def services_required() -> bool:
    """True when a missing service must fail the run instead of skipping (CI)."""
    flags = ("CI", "MAILGUARD_REQUIRE_SERVICES")
    return any(os.environ.get(name, "").lower() not in ("", "0", "false", "no") for name in flags)


def missing(problem: str) -> NoReturn:
    """A tool or service the test needs is missing: skip on a developer's machine, fail
    in CI (or with MAILGUARD_REQUIRE_SERVICES), where contrib/install-deps.sh installs it."""
    import pytest  # noqa: PLC0415

    if services_required():
        pytest.fail(f"{problem} (CI/MAILGUARD_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(f"{problem} (install-deps.sh; MAILGUARD_REQUIRE_SERVICES=1 fails instead)")


def parse_env_file(path: Path) -> dict[str, str]:
    """Parse the ``export VAR=value`` lines written by contrib/test-services.sh."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep:
            continue
        parts = shlex.split(value) if value else [""]
        values[name.strip()] = parts[0] if parts else ""
    return values


def parse_hostport(value: str) -> tuple[str, int] | None:
    """``127.0.0.1:783`` -> ("127.0.0.1", 783); None when empty or malformed."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def load_services(environ: dict[str, str] | None = None) -> TestServices:
    """Read the service addresses from the environment, else from services.env."""
    env = dict(os.environ if environ is None else environ)
    if not any(env.get(name) for name in SERVICE_VARS):
        env_dir = Path(env.get("MAILGUARD_TEST_DIR") or DEFAULT_TEST_DIR)
        env = {**parse_env_file(env_dir / "services.env"), **env}
    return TestServices(
        pg_url=env.get(ENV_PG_URL, ""),
        clamd_socket=env.get(ENV_CLAMD_SOCKET, ""),
        clamd_tcp=parse_hostport(env.get(ENV_CLAMD_TCP, "")),
        spamd_tcp=parse_hostport(env.get(ENV_SPAMD_TCP, "")),
        spamd_socket=env.get(ENV_SPAMD_SOCKET, ""),
        spamd_prefs=env.get(ENV_SPAMD_PREFS, ""),
        dns=parse_hostport(env.get(ENV_DNS, "")),
    )


def tcp_connects(addr: tuple[str, int] | None, timeout: float = CONNECT_TIMEOUT) -> bool:
    if addr is None:
        return False
    try:
        with socket.create_connection(addr, timeout=timeout):
            return True
    except OSError:
        return False


def unix_connects(path: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    if not path:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            return True
    except OSError:
        return False


def pg_address(url: str) -> tuple[str, int] | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 5432
    except ValueError:
        return None
    return (host, port) if host else None


def dns_answers(addr: tuple[str, int] | None, timeout: float = CONNECT_TIMEOUT) -> bool:
    """One raw UDP query (SOA of bl.test) — rbldnsd is UDP-only, so no connect test."""
    if addr is None:
        return False
    # Header: id 0x4d47, RD, 1 question; question: bl.test SOA IN.
    query = b"\x4d\x47\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02bl\x04test\x00\x00\x06\x00\x01"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(query, addr)
            reply, _ = sock.recvfrom(4096)
    except OSError:
        return False
    return reply[:2] == query[:2]


def pg_problem(svc: TestServices) -> str | None:
    """None when PostgreSQL is usable, else why not."""
    if not svc.pg_url:
        return f"PostgreSQL not configured ({ENV_PG_URL} unset)"
    if not tcp_connects(pg_address(svc.pg_url)):
        return f"PostgreSQL not reachable at {svc.pg_url}"
    return None


def clamd_problem(svc: TestServices) -> str | None:
    if not svc.clamd_socket:
        return f"clamd not configured ({ENV_CLAMD_SOCKET} unset)"
    if not unix_connects(svc.clamd_socket):
        return f"clamd not reachable at {svc.clamd_socket}"
    return None


def spamd_problem(svc: TestServices) -> str | None:
    if svc.spamd_tcp is None:
        return f"spamd not configured ({ENV_SPAMD_TCP} unset)"
    if not tcp_connects(svc.spamd_tcp):
        return f"spamd not reachable at {svc.spamd_tcp[0]}:{svc.spamd_tcp[1]}"
    return None


def spamd_prefs_problem(svc: TestServices) -> str | None:
    if not svc.spamd_prefs:
        return f"spamd SQL prefs not configured ({ENV_SPAMD_PREFS} unset)"
    if not Path(svc.spamd_prefs).is_file():
        return f"spamd SQL prefs file missing: {svc.spamd_prefs}"
    return spamd_problem(svc)


def dns_problem(svc: TestServices) -> str | None:
    if svc.dns is None:
        return f"test DNS server not configured ({ENV_DNS} unset)"
    if not dns_answers(svc.dns):
        return f"test DNS server (rbldnsd) not answering at {svc.dns[0]}:{svc.dns[1]}"
    return None
