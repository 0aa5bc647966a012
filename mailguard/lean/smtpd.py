"""`mailguard smtpd`: the drop-in for qmail-smtpd under tcpserver (docs/drop-in.md).

Started once per connection, so it only hands the connection (fd 0, which tcpserver
made the TCP socket, as fd 1) and its environment to the daemon over the control socket,
waits until the daemon says the session is over, and exits — tcpserver's concurrency
limit keeps counting real sessions. When the daemon cannot take the connection it
answers `421 <host> service temporarily unavailable (#4.3.0)` itself and exits: a client
is never served by something that cannot filter.

When fd 0 and fd 1 are not one socket — pipes from ucspi-ssl's sslserver (SMTPS), an
inetd-style or test wrapper — it hands the daemon one end of a socketpair instead and
relays bytes between that and fd 0 / fd 1, unchanged, until the session ends (one
thread per direction, so neither side can stall the other). The wrapper's TLS is told
to the daemon by its environment (SSL_PROTOCOL/SSL_CIPHER, or MAILGUARD_TLS).

Run as `mailguard smtpd`, `python3 -m mailguard.lean.smtpd` or the qmail-hooks/qmail-smtpd
shim (docs/drop-in.md), in place of qmail-smtpd: no arguments; tcpserver's (or
sslserver's) environment; the settings MAILGUARD_CONTROL / MAILGUARD_CONFIG.
Exit status: 0 the daemon served the session; 1 it could not (after the 421).
"""

from __future__ import annotations

import _socket
import _thread
import os
import sys

from mailguard.control import protocol
from mailguard.lean import settings

CONNECT_TIMEOUT_S = 5.0  # a daemon that accepts but does not answer is treated as down
EXIT_SERVED = 0
EXIT_UNAVAILABLE = 1


def unavailable(environ: dict[str, str]) -> bytes:
    """Our own line when the daemon is unreachable (qmail has none; RFC 5321 3.8: a 421
    greeting, then close)."""
    host = settings.hostname(environ)
    return f"421 {host} service temporarily unavailable (#4.3.0)\r\n".encode()


def one_socket() -> bool:
    """fd 0 and fd 1 are the same socket (tcpserver, stunnel's socketpair): it can be
    handed over as it is. Anything else (pipes) needs the relay."""
    try:
        st0, st1 = os.fstat(0), os.fstat(1)
    except OSError:
        return False
    return (st0.st_mode & 0o170000 == 0o140000  # S_IFSOCK
            and (st0.st_dev, st0.st_ino) == (st1.st_dev, st1.st_ino))


def main() -> int:
    environ = dict(os.environ)
    path = settings.control_socket(environ)
    try:
        sock = protocol.connect(path, CONNECT_TIMEOUT_S)
    except OSError as exc:
        return _fail(environ, f"cannot reach the daemon at {path}: {exc.strerror or exc}")
    relay: _socket.socket | None = None
    handed = 0
    if not one_socket():
        relay, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        handed = theirs.detach()
    try:
        sock.settimeout(protocol.ACK_TIMEOUT_S)
        try:
            protocol.send_request(
                sock, {"v": protocol.VERSION, "op": "smtp", "env": environ}, [handed])
        finally:
            if relay is not None:
                os.close(handed)  # the daemon holds its own copy now
        reader = protocol.LineReader(sock)
        try:
            reply = reader.read()
        except (OSError, protocol.ProtocolError) as exc:  # stopped or hung daemon
            reply = {"error": f"no acknowledgement within {protocol.ACK_TIMEOUT_S:g} s "
                              f"({exc})"}
        if reply is None:  # closed before taking the connection: it did not adopt it
            reply = {"error": "closed without taking the connection"}
        if reply.get("error"):
            # 421 ourselves; close the control connection first, so that a daemon waking
            # up later cannot send `taken` and drops the session instead of adopting it.
            sock.close()
            code = _fail(environ, f"the daemon refused the connection: {reply['error']}")
            _hang_up()
            return code
        if reply.get("taken"):
            sock.settimeout(None)  # the session lasts as long as the daemon's timeouts allow
            if relay is not None:
                _relay(relay)
            reply = reader.read()
    except (OSError, protocol.ProtocolError) as exc:
        return _fail(environ, f"control socket: {exc}")
    finally:
        sock.close()
    if reply is None:
        # The daemon closed without a word: it may have adopted the connection and died.
        # Whatever it wrote stands; we must not add to it. Closing is safe: nothing that
        # was not acknowledged with 250 was accepted.
        _log("the daemon closed the control connection during the session")
        return EXIT_UNAVAILABLE
    if reply.get("error"):
        return _fail(environ, f"the daemon refused the connection: {reply['error']}")
    return EXIT_SERVED


def _relay(peer: _socket.socket) -> None:
    """Copy fd 0 -> peer on a thread and peer -> fd 1 here, until the daemon closes its
    end (the session is over). A half-close by the client is passed on as one."""
    _thread.start_new_thread(_copy_in, (peer,))
    while True:
        try:
            data = peer.recv(65536)
        except OSError:
            return
        if not data:
            return
        try:
            _write_all(1, data)
        except OSError:  # the client (or its wrapper) is gone: the daemon times out
            peer.shutdown(_socket.SHUT_RDWR)
            return


def _copy_in(peer: _socket.socket) -> None:
    try:
        while data := os.read(0, 65536):
            peer.sendall(data)
        peer.shutdown(_socket.SHUT_WR)  # the client's EOF, as the daemon would see it
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fail(environ: dict[str, str], why: str) -> int:
    _log(why)
    try:  # noqa: SIM105 - contextlib costs the per-process start-up ~3 ms
        os.write(1, unavailable(environ))
    except OSError:
        pass
    return EXIT_UNAVAILABLE


def _hang_up() -> None:
    """End the TCP connection for every holder of it: a daemon that wakes up later and
    adopts the descriptor still queued on the control socket finds it closed."""
    try:
        client = _socket.socket(fileno=0)
    except OSError:
        return
    try:  # noqa: SIM105 - contextlib costs the per-process start-up ~3 ms
        client.shutdown(_socket.SHUT_RDWR)
    except OSError:
        pass
    client.detach()


def _log(text: str) -> None:
    # stderr goes to the tcpserver service's log (multilog), like qmail-smtpd's messages
    try:  # noqa: SIM105 - contextlib costs the per-process start-up ~3 ms
        os.write(2, f"mailguard smtpd: {text}\n".encode("utf-8", "replace"))
    except OSError:
        pass


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]):
        sys.stdout.write(__doc__ or "")
        sys.exit(0)
    sys.exit(main())
