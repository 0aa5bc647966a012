#!/usr/bin/env python3
"""A checkpassword(8) stand-in for tests: reads user\\0password\\0timestamp\\0 from fd 3.

User "good" with password "secret" → exec its arguments (exit 0 when there are none);
user "tempfail" → 111; user "slow" → sleeps 60 s (timeouts); anything else → 1.
Writes what it got to $CHECKPW_RECORD (if set), to prove the fd 3 format."""

import os
import sys
import time


def main() -> int:
    data = b""
    while len(data) < 512:
        chunk = os.read(3, 512 - len(data))
        if not chunk:
            break
        data += chunk
    parts = data.split(b"\0")
    if len(parts) != 4 or parts[3] != b"":
        return 2  # misused
    user, password, stamp = parts[:3]
    record = os.environ.get("CHECKPW_RECORD")
    if record:
        with open(record, "ab") as fh:
            fh.write(b"%s %s %s %s\n" % (user, password, stamp, os.environ.get(
                "TCPREMOTEIP", "").encode()))
    if user == b"tempfail":
        return 111
    if user == b"slow":
        time.sleep(60)
        return 1
    if user == b"good" and password == b"secret":
        if len(sys.argv) > 1:
            os.execv(sys.argv[1], sys.argv[1:])
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
