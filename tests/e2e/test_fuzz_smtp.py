"""Fuzzing the SMTP front end over a real socket (issue #12): random command sequences and
random bytes against one real daemon per module. Whatever arrives, the daemon must not
crash, must not hang (after the client half-closes, it answers what it read and closes),
must only ever send well-formed reply lines (`^\\d{3}[ -]`, CRLF-terminated), and must
not reach its internal-error path (a logged traceback, `event=command_error`).

CI runs a few dozen sessions; MAILGUARD_FUZZ_EXAMPLES=2000 runs a longer campaign."""

from __future__ import annotations

import re
import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.daemon_harness import Daemon
from tests.fuzzing import fuzz_settings, timeout_s

CI_EXAMPLES = 40
FUZZ = fuzz_settings(CI_EXAMPLES)
pytestmark = pytest.mark.timeout(timeout_s(CI_EXAMPLES, 0.5))
REPLY_LINE = re.compile(rb"\d{3}[ -][^\r\n]*")
# After the fuzzed bytes: end a message in progress, then leave. Then the half-close.
TAIL = b"\r\n.\r\nQUIT\r\n"
SESSION_TIMEOUT_S = 20

VERBS = ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
         "HELP", "STARTTLS", "AUTH", "BDAT", "XCLIENT", "helo", "mail", "Rcpt", "dAtA", ""]
ARGS = ["", " mx.test", " FROM:<a@example.org>", " FROM:<>", " TO:<b@example.com>",
        " TO:<postmaster>", " TO:<@a,@b:u@example.com>", " TO:<u%foreign.test@example.com>",
        " FROM:<a@example.org> SIZE=99999999999999999999999", " FROM:<a@b> BODY=8BITMIME",
        " FROM:<a@b> SMTPUTF8", " FROM:<a@b> SIZE=", " TO:<\"q\\\"x\"@example.com>",
        " FROM:<spammer@bad.test>", " PLAIN AGFhAGI=", " LOGIN", " 100 LAST", " TO:<u@[1.2.3.4]>",
        " TO:<" + "x" * 1000 + "@example.com>", " FROM:" + "<" * 50]
ENDINGS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\0\r\n"]

text_arg = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
command = st.builds(
    lambda verb, arg, extra, end: (verb + arg + extra).encode("utf-8") + end,
    st.sampled_from(VERBS), st.sampled_from(ARGS),
    st.one_of(st.just(""), text_arg), st.sampled_from(ENDINGS))
body_line = st.one_of(
    st.sampled_from([b".", b"..", b".x", b"", b"Received: from x", b"Subject: fuzz",
                     b"x" * 5000, b"From: a@example.org"]),
    st.binary(max_size=80).map(lambda b: b.replace(b"\r\n", b"")),
)
data_block = st.builds(
    lambda lines, end: b"DATA\r\n" + b"".join(line + end for line in lines) + b".\r\n",
    st.lists(body_line, max_size=12), st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
step = st.one_of(command, command, data_block, st.binary(min_size=1, max_size=200))


def run_session(d: Daemon, payload: bytes) -> bytes:
    """Send `payload` + TAIL, half-close, read until the daemon closes."""
    sock = socket.create_connection((d.host, d.port), timeout=SESSION_TIMEOUT_S)
    received = bytearray()

    def send() -> None:
        try:
            sock.sendall(payload + TAIL)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon closed first (QUIT, 421): what it sent is checked below

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(
                    f"no close within {SESSION_TIMEOUT_S}s; got {bytes(received)[-300:]!r}"
                ) from None
            if not chunk:
                break
            received += chunk
    finally:
        sender.join(5)
        sock.close()
    return bytes(received)


def check_session(d: Daemon, payload: bytes) -> None:
    log_before = len(d.read_log())
    received = run_session(d, payload)
    assert received.startswith(b"220 "), received[:200]
    assert received.endswith(b"\r\n"), received[-200:]
    for line in received[:-2].split(b"\r\n"):
        assert REPLY_LINE.fullmatch(line), f"malformed reply line {line!r} for {payload!r}"
    assert d.proc.poll() is None, "the daemon died"
    log = d.read_log(0.05)[log_before:]
    assert "Traceback" not in log and "event=command_error" not in log, \
        f"internal error for {payload!r}:\n{log[-3000:]}"


@FUZZ
@given(st.lists(step, max_size=15))
def test_random_command_sequences(daemon: Daemon, steps: list[bytes]) -> None:
    check_session(daemon, b"".join(steps))


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(daemon: Daemon, payload: bytes) -> None:
    check_session(daemon, payload)


def test_daemon_still_serves_after_the_fuzzing(daemon: Daemon) -> None:
    received = run_session(daemon, b"HELO x\r\nMAIL FROM:<a@example.org>\r\n"
                                   b"RCPT TO:<after-fuzz@example.com>\r\nDATA\r\n"
                                   b"Subject: after\r\n\r\nhi\r\n")
    assert b"\r\n250 ok " in received, received
    assert len(daemon.spooled("example.com", "after-fuzz")) == 1
