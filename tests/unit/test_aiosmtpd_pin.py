"""The aiosmtpd release mailguard is tested with. frontend/protocol.py replaces aiosmtpd's
command loop and timer callback and reaches into its private members (and asyncio's
StreamReader's), which no release promises to keep: pyproject.toml pins the tested range,
and these tests fail with a clear message when the installed aiosmtpd leaves that range
or lacks what protocol.py relies on (docs/DEVELOPING.md, "aiosmtpd").
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import socket
import tomllib
from importlib.metadata import version
from pathlib import Path

from aiosmtpd.smtp import SMTP

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# The tested range, [first, below): must be the pin in pyproject.toml.
TESTED_FIRST = (1, 4, 6)
TESTED_BELOW = (1, 5)
PIN = f"aiosmtpd>={'.'.join(map(str, TESTED_FIRST))},<{'.'.join(map(str, TESTED_BELOW))}"

# What MailguardSMTP overrides or calls on aiosmtpd's SMTP class.
CLASS_MEMBERS = ("_handle_client", "_timeout_cb", "_reset_timeout", "eof_received",
                 "connection_made", "connection_lost", "line_length_limit")
# Instance attributes it reads once a connection is made.
INSTANCE_MEMBERS = ("_reader", "_writer", "_timeout_handle", "_timeout_duration", "loop",
                    "transport", "hostname")
# The constructor keywords it passes.
INIT_KEYWORDS = ("hostname", "timeout", "enable_SMTPUTF8", "data_size_limit", "loop")

HOW = "see docs/DEVELOPING.md, section 'aiosmtpd', for moving to a new release"


def _release(text: str) -> tuple[int, ...]:
    """"1.4.6" → (1, 4, 6); a pre-release suffix ("1.5.0rc1") is cut off."""
    parts: list[int] = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(parts)


def test_pyproject_pins_the_tested_range() -> None:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(r"aiosmtpd\b", d)]
    assert pins == [PIN], (
        f"pyproject.toml must pin aiosmtpd to the tested range {PIN!r} (this test's "
        f"TESTED_FIRST / TESTED_BELOW), found {pins}; {HOW}"
    )


def test_installed_aiosmtpd_is_in_the_tested_range() -> None:
    installed = version("aiosmtpd")
    assert TESTED_FIRST <= _release(installed) < TESTED_BELOW, (
        f"aiosmtpd {installed} is installed, but mailguard is tested with {PIN}: "
        f"frontend/protocol.py relies on aiosmtpd internals; {HOW}"
    )


def test_smtp_class_has_the_members_protocol_py_overrides() -> None:
    missing = [name for name in CLASS_MEMBERS if not hasattr(SMTP, name)]
    assert not missing, (
        f"aiosmtpd {version('aiosmtpd')}: SMTP lacks {missing}, which "
        f"frontend/protocol.py overrides or calls; {HOW}"
    )
    params = inspect.signature(SMTP.__init__).parameters
    gone = [name for name in INIT_KEYWORDS if name not in params]
    assert not gone, f"aiosmtpd SMTP() no longer takes {gone}; {HOW}"


class _NoHooks:
    pass


async def test_a_connection_has_the_private_attributes_protocol_py_reads() -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, proto = await loop.connect_accepted_socket(
        lambda: SMTP(_NoHooks(), hostname="pin.test", timeout=60.0, loop=loop), ours
    )
    try:
        missing = [name for name in INSTANCE_MEMBERS if not hasattr(proto, name)]
        assert not missing, (
            f"aiosmtpd {version('aiosmtpd')}: a connected SMTP lacks {missing}, which "
            f"frontend/protocol.py reads; {HOW}"
        )
        reader = proto._reader
        # STARTTLS drops clear-text input and re-points the reader at the TLS transport
        assert isinstance(getattr(reader, "_buffer", None), bytearray), (
            f"asyncio.StreamReader has no _buffer bytearray any more; {HOW}"
        )
        assert hasattr(reader, "_transport"), f"asyncio.StreamReader lacks _transport; {HOW}"
        assert proto._timeout_duration == 60.0
    finally:
        transport.close()
        theirs.close()
        task = getattr(proto, "_handler_coroutine", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
