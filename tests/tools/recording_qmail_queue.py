#!/usr/bin/env python3
"""A stand-in for qmail-queue in tests: same fd protocol, records instead of queueing.

Reads the message from fd 0 to EOF, then the envelope from fd 1 up to its final NUL, checks
the envelope as qmail-queue.c does (exit 91 / 54 / 11), and writes `<n>.msg` and `<n>.env`
into $RECORD_DIR (each via a temporary name and an atomic rename, .env last, so a test that
sees the .env also sees the .msg). Standalone on purpose: it shares no code with mailguard.

Environment:
  RECORD_DIR     where to record (required unless FAKE_QQ_EXIT makes us exit before)
  FAKE_QQ_EXIT   exit status after recording (default 0)
  FAKE_QQ_TEXT   written to fd 6, if fd 6 is open, just before exiting (e.g. "Dno thanks")
  FAKE_QQ_SLEEP  seconds to sleep before exiting (timeout tests)
"""

import contextlib
import os
import sys
import time

ADDR = 1003  # qmail-queue.c


def read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def envelope_status(data: bytes) -> int:
    """0 if `data` is a complete envelope, else qmail-queue's exit status for it."""
    if not data:
        return 54
    if data[:1] != b"F":
        return 91
    pos = 1
    first = True
    while True:
        if not first:
            if pos >= len(data):
                return 54
            if data[pos] == 0:
                return 0
            if data[pos] != ord("T"):
                return 91
            pos += 1
        first = False
        window = data[pos : pos + ADDR]
        nul = window.find(b"\0")
        if nul == -1:
            return 11 if len(window) >= ADDR else 54
        pos += nul + 1


def record(directory: str, message: bytes, envelope: bytes) -> None:
    n = f"{time.time_ns()}.{os.getpid()}"
    for suffix, data in ((".msg", message), (".env", envelope)):
        tmp = os.path.join(directory, f".tmp.{n}{suffix}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(directory, n + suffix))


def finish(status: int) -> None:
    text = os.environ.get("FAKE_QQ_TEXT")
    if text is not None:
        # fd 6 may not be open: a qmail without the custom-error feature.
        with contextlib.suppress(OSError):
            os.write(6, text.encode("utf-8", "surrogateescape"))
    delay = float(os.environ.get("FAKE_QQ_SLEEP", "0") or 0)
    if delay > 0:
        time.sleep(delay)
    sys.exit(status)


def main() -> None:
    try:
        message = read_all(0)
    except OSError:
        sys.exit(54)
    try:
        envelope = read_all(1)
    except OSError:
        sys.exit(54)
    status = envelope_status(envelope)
    if status:
        finish(status)
    directory = os.environ.get("RECORD_DIR")
    if not directory:
        sys.stderr.write("recording_qmail_queue: RECORD_DIR is not set\n")
        sys.exit(55)  # qmail-queue: unable to read configuration
    try:
        record(directory, message, envelope)
    except OSError as e:
        sys.stderr.write(f"recording_qmail_queue: {e}\n")
        sys.exit(53)  # write error or disk full
    finish(int(os.environ.get("FAKE_QQ_EXIT", "0") or 0))


if __name__ == "__main__":
    main()
