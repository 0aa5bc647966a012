"""The control socket against hostile requests: descriptors spread over many messages
and absurdly nested JSON are refused with an error line, and no descriptor is kept."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from mailguard.control import protocol
from mailguard.control.server import ControlServer, Reply
from mailguard.metrics import Metrics
from mailguard.settings.control import ControlConfig


async def count_fds(request: dict[str, Any], fds: list[int], reply: Reply) -> None:
    for fd in fds:
        os.close(fd)
    await reply({"fds": len(fds)})


async def started(path: Path) -> ControlServer:
    server = ControlServer(ControlConfig(socket=str(path)), {"count": count_fds}, Metrics())
    await server.start()
    return server


def send_in_pieces(path: Path, pieces: list[tuple[bytes, list[int]]]) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        for data, fds in pieces:
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, protocol.pack_fds(fds))])
        s.settimeout(5)
        return s.recv(1000)


async def test_descriptors_beyond_max_fds_over_several_messages_are_refused(
    tmp_path: Path,
) -> None:
    """recvmsg takes at most MAX_FDS per call, but a client may send one byte at a time
    with MAX_FDS descriptors each: the daemon must not collect them without bound."""
    path = tmp_path / "control.sock"
    server = await started(path)
    r, w = os.pipe()
    try:
        line = protocol.encode({"v": 1, "op": "count"})
        fds = [w] * protocol.MAX_FDS
        pieces = [(line[i : i + 1], fds) for i in range(3)] + [(line[3:], [])]
        answer = await asyncio.to_thread(send_in_pieces, path, pieces)
        assert answer.startswith(b'{"error":"bad request')
    finally:
        os.close(w)
        await server.close(1)
    try:
        assert os.read(r, 1) == b""  # EOF: the daemon kept no copy of the write end
    finally:
        os.close(r)


@pytest.mark.parametrize("depth", [50, 100_000])
async def test_nested_json_is_a_bad_request_not_a_crash(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "control.sock"
    server = await started(path)
    try:
        line = b'{"v":1,"op":"count","x":' + b'{"a":' * depth + b"1" + b"}" * (depth + 1) + b"\n"
        answer = await asyncio.to_thread(send_in_pieces, path, [(line, [])])
        if depth < 100:
            assert answer == b'{"fds":0}\n'
        else:
            assert answer.startswith(b'{"error":"bad request')
    finally:
        await server.close(1)
