"""Session faults through the real daemon: a client that half-closes after pipelining
its whole session, and an unexpected error while a command is handled."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from mailguard.control import protocol
from tests.e2e.daemon_harness import Client, Daemon, body, iter_lines

Connect = Callable[..., Client]


def read_all_replies(c: Client) -> list[bytes]:
    out = []
    while reply := c.reply():
        out.append(reply)
    return out


def test_half_closed_pipelined_session_is_answered_in_full(
    daemon: Daemon, connect: Connect
) -> None:
    """qmail-smtpd answers every command it read before EOF; a client that sends its whole
    session and shuts down its sending side must still get the 250 for its message (else
    it retries: a duplicate) and the summary line must say what happened."""
    c = connect(daemon)
    assert c.reply() == b"220 mx.test ESMTP\r\n"
    c.send(b"HELO half.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<half@example.com>\r\n"
           b"DATA\r\n" + body("half-closed") + b".\r\nQUIT\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    replies = read_all_replies(c)
    assert replies[:4] == [b"250 mx.test\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go ahead\r\n"]
    assert replies[4].startswith(b"250 ok ") and b" qp " in replies[4]
    assert replies[5:] == [b"221 mx.test\r\n"]
    assert len(daemon.spooled("example.com", "half")) == 1
    log = daemon.wait_log("rcpts=half@example.com")
    [line] = iter_lines(log, "rcpts=half@example.com")
    assert "result=accepted" in line


def test_unexpected_error_in_a_command_is_a_logged_451(daemon: Daemon) -> None:
    """A command whose handling raises (here: a drop-in session whose TCPLOCALIP is not an
    address, met by an address literal) gets a 451 and a close, never a silent hang-up,
    and the traceback is logged; the lean process is told the session is over."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = Client(*listener.getsockname()[:2])
        try:
            server_side, _ = listener.accept()
            ctl = protocol.connect(str(daemon.control), 5)
            try:
                env = {"TCPREMOTEIP": "127.0.0.1", "TCPLOCALIP": "not-an-address"}
                protocol.send_request(ctl, {"v": 1, "op": "smtp", "env": env},
                                      [server_side.fileno()])
                server_side.close()
                assert client.reply() == b"220 mx.test ESMTP\r\n"
                assert client.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
                assert client.cmd("RCPT TO:<u@[192.0.2.1]>") == (
                    b"451 local error, please try again later (#4.3.0)\r\n"
                )
                assert client.closed_by_peer()
                reader = protocol.LineReader(ctl)
                assert reader.read() == {"taken": True}  # acknowledged at once
                assert reader.read() == {"done": True}
            finally:
                ctl.close()
        finally:
            client.close()
    log = daemon.wait_log("event=command_error")
    assert "Traceback" in log


def test_a_handed_over_unix_socket_is_served(daemon: Daemon, tmp_path: Path) -> None:
    """Descriptor 0 may be a unix stream socket (a unix-socket super-server): its address
    is a path, not (host, port); the session must run (client facts from the environment)
    and end with "done", not hang the lean process."""
    path = str(tmp_path / "front.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(10)
        try:
            client.connect(path)
            server_side, _ = listener.accept()
            ctl = protocol.connect(str(daemon.control), 5)
            try:
                env = {"TCPREMOTEIP": "127.0.0.1"}
                protocol.send_request(ctl, {"v": 1, "op": "smtp", "env": env},
                                      [server_side.fileno()])
                server_side.close()
                assert client.recv(100) == b"220 mx.test ESMTP\r\n"
                client.sendall(b"QUIT\r\n")
                assert client.recv(100) == b"221 mx.test\r\n"
                ctl.settimeout(10)
                reader = protocol.LineReader(ctl)
                assert reader.read() == {"taken": True}  # acknowledged at once
                assert reader.read() == {"done": True}
            finally:
                ctl.close()
        finally:
            client.close()
