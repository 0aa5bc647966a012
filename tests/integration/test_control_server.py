"""The control socket server with real unix sockets and real descriptor passing."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mailguard.control import protocol
from mailguard.control.server import ControlError, ControlServer, Reply
from mailguard.metrics import Metrics
from mailguard.settings.control import ControlConfig


async def count_fds(request: dict[str, Any], fds: list[int], reply: Reply) -> None:
    for fd in fds:
        os.close(fd)
    await reply({"fds": len(fds), "echo": request.get("env", {})})


def handlers() -> Mapping[str, Any]:
    return {"count": count_fds}


def ask(path: Path, request: dict[str, Any], fds: list[int]) -> dict[str, Any] | None:
    sock = protocol.connect(str(path), 5)
    try:
        protocol.send_request(sock, request, fds)
        return protocol.LineReader(sock).read()
    finally:
        sock.close()


async def test_request_reply_mode_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"  # the directory is created
    metrics = Metrics()
    server = ControlServer(ControlConfig(socket=str(path), socket_mode=0o600), handlers(),
                           metrics)
    await server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        r, w = os.pipe()
        try:
            reply = await asyncio.to_thread(
                ask, path, {"v": 1, "op": "count", "env": {"A": "b"}}, [r, w])
            assert reply == {"fds": 2, "echo": {"A": "b"}}
            # unknown op and wrong version: refused, and the passed fds closed by the daemon
            for bad in ({"v": 1, "op": "nope"}, {"v": 2, "op": "count"}):
                reply = await asyncio.to_thread(ask, path, bad, [r])
                assert reply is not None and "error" in reply
        finally:
            os.close(r)
        try:
            with pytest.raises(BrokenPipeError):  # the daemon kept no copy of the read end
                os.write(w, b"x")
        finally:
            os.close(w)
        assert metrics.value("mailguard_control_requests_total", op="nope", outcome="bad") == 1
    finally:
        await server.close(1)
    assert not path.exists()


async def test_garbage_gets_an_error_line(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    server = ControlServer(ControlConfig(socket=str(path)), handlers(), Metrics())
    await server.start()
    try:
        def garbage() -> bytes:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(b"not json\n")
                return s.recv(1000)

        assert (await asyncio.to_thread(garbage)).startswith(b'{"error":"bad request')
    finally:
        await server.close(1)


async def test_stale_socket_replaced_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening: what a killed daemon leaves
    stale.close()
    first = ControlServer(ControlConfig(socket=str(path)), handlers(), Metrics())
    await first.start()
    try:
        second = ControlServer(ControlConfig(socket=str(path)), handlers(), Metrics())
        with pytest.raises(ControlError, match="in use by another running daemon"):
            await second.start()
        assert path.exists()  # the first daemon's socket is left alone
    finally:
        await first.close(1)
    path.write_text("not a socket")
    with pytest.raises(ControlError, match="not a socket"):
        await ControlServer(ControlConfig(socket=str(path)), handlers(), Metrics()).start()
