"""`mailguard queue`: the QMAILQUEUE wrapper (docs/drop-in.md, docs/control-socket.md).

Called exactly like qmail-queue — message on fd 0, envelope on fd 1 — by qmail-smtpd,
qmail-inject or any local program. It hands both descriptors to the daemon, which reads,
scans and queues, and exits with the status the daemon answers: 0 queued; the real
qmail-queue's own status when that failed; 31 / 71 (or 82 with `D<text>` / `Z<text>`
written to fd 6, when the caller opened fd 6) for mailguard's own refusals. When the
daemon cannot be reached, does not acknowledge the message within 5 s (stopped, hung)
or does not answer in time it exits 71: nothing is queued
unscanned, and the caller retries (qmail-smtpd answers `451 mail server temporarily
rejected message (#4.3.0)`).
"""

from __future__ import annotations

import os
import sys

from mailguard.control import protocol
from mailguard.lean import settings

EX_TEMP_REFUSED = 71
EX_CUSTOM = 82
CUSTOM_FD = 6
CONNECT_TIMEOUT_S = 5.0
DEADLINE_S = 300.0  # = [queue] deadline_s's default
DEADLINE_MARGIN_S = 30.0  # the daemon answers at its deadline; we give up a bit later


def fd6_open() -> bool:
    """True when fd 6 is open for writing: the caller (notqmail 1.09+) reads custom text
    from it after exit 82."""
    import fcntl  # noqa: PLC0415 - a small C module, needed only here

    try:
        flags = fcntl.fcntl(CUSTOM_FD, fcntl.F_GETFL)
    except OSError:
        return False
    return flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def wait_s(environ: dict[str, str]) -> float:
    value = settings.lookup(environ, "queue", "deadline_s")
    deadline = float(value) if isinstance(value, int | float) and value > 0 else DEADLINE_S
    return deadline + DEADLINE_MARGIN_S


def main() -> int:
    environ = dict(os.environ)
    path = settings.control_socket(environ)
    custom = fd6_open()
    try:
        sock = protocol.connect(path, CONNECT_TIMEOUT_S)
    except OSError as exc:
        return _fail(f"cannot reach the daemon at {path}: {exc.strerror or exc}")
    try:
        request = {"v": protocol.VERSION, "op": "queue", "env": environ, "fd6": custom,
                   "pid": os.getpid()}
        sock.settimeout(protocol.ACK_TIMEOUT_S)
        protocol.send_request(sock, request, [0, 1])
        reader = protocol.LineReader(sock)
        try:
            reply = reader.read()
        except OSError as exc:  # a stopped or hung daemon: the caller retries later
            return _fail(f"no acknowledgement within {protocol.ACK_TIMEOUT_S:g} s: {exc}")
        if reply is not None and reply.get("taken"):
            sock.settimeout(wait_s(environ))
            reply = reader.read()
    except (OSError, protocol.ProtocolError) as exc:
        return _fail(f"control socket: {exc}")
    finally:
        sock.close()
    if reply is None or "exit" not in reply:
        why = reply.get("error") if reply else "no answer"
        return _fail(f"the daemon did not queue the message: {why}")
    code = reply["exit"]
    text = reply.get("text") or ""
    if not isinstance(code, int) or not 0 <= code <= 255:
        return _fail(f"bad exit status from the daemon: {code!r}")
    if code == EX_CUSTOM:
        if not custom or not isinstance(text, str) or not text:
            return _fail("exit 82 without a text to write")
        try:
            os.write(CUSTOM_FD, text.encode("utf-8", "replace"))
        except OSError as exc:
            return _fail(f"cannot write fd 6: {exc.strerror}")
    return code


def _fail(why: str) -> int:
    try:  # noqa: SIM105 - contextlib costs the per-process start-up ~3 ms
        os.write(2, f"mailguard queue: {why}\n".encode("utf-8", "replace"))
    except OSError:
        pass
    return EX_TEMP_REFUSED


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]):
        sys.stdout.write(__doc__ or "")
        sys.exit(0)
    sys.exit(main())
