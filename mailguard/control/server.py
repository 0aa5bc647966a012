"""The daemon's control socket: a unix stream server that receives requests with file
descriptors (SCM_RIGHTS) from the lean `mailguard smtpd` / `mailguard queue` processes and
runs them with the daemon's long-lived parts (docs/control-socket.md).

asyncio's streams and protocols drop ancillary data, so requests are read with
`recvmsg` on the raw non-blocking socket, woken by `loop.add_reader`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from mailguard.control import protocol
from mailguard.errors import MailguardError
from mailguard.metrics import Metrics
from mailguard.settings.control import ControlConfig

log = logging.getLogger("mailguard.control")

REQUEST_TIMEOUT_S = 10.0  # a client that connects must send its request line by then

# reply(obj) -> False when it could not be sent (the caller is gone: it gave up waiting)
Reply = Callable[[Mapping[str, Any]], Awaitable[bool]]
# an op: (request, fds it now owns, reply) -> None; it closes every fd it was given
Handler = Callable[[dict[str, Any], list[int], Reply], Awaitable[None]]


class ControlError(Exception):
    """The control socket cannot be set up (path, permissions, another daemon)."""


class UnsafeSocketDirectory(MailguardError):
    """The socket's directory lets other users replace the socket: the daemon must not
    start (not a ControlError, which only turns the control socket off)."""


class Peer(NamedTuple):
    """The connecting process's credentials at connect() time (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


UNKNOWN_PEER = Peer(0, -1, -1)
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# Environment variables that grant something or say who the client is; an untrusted
# peer's are named in the log when they are dropped (the whole environment is).
POWERS = ("RELAYCLIENT", "RBLSMTPD", "DATABYTES", "QMAILQUEUE", "TARPITCOUNT", "TARPITDELAY",
          "REMOTE_HOST", "MAILGUARD_TLS", "SSL_PROTOCOL", "SSL_CIPHER")


def peer_credentials(conn: socket.socket) -> Peer:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return UNKNOWN_PEER
    return Peer(*_UCRED.unpack(raw))


class Trust:
    """Which peers may hand over an environment with powers: root, the daemon's own
    user, `[control] trusted_users`, and `trusted_groups` (the peer's group, or a
    member of the group in the group database). Names are resolved once, at start."""

    def __init__(self, uids: frozenset[int], gids: frozenset[int]) -> None:
        self.uids = uids
        self.gids = gids

    @classmethod
    def from_config(cls, cfg: ControlConfig) -> Trust:
        uids = {0, os.geteuid()}
        gids: set[int] = set()
        for name in cfg.trusted_users:
            try:
                uids.add(int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid)
            except KeyError:
                log.info("event=control_unknown_user user=%s ignored=yes", name)
        for name in cfg.trusted_groups:
            try:
                group = grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
            except KeyError:
                if name.isdigit():
                    gids.add(int(name))
                else:
                    log.info("event=control_unknown_group group=%s ignored=yes", name)
                continue
            gids.add(group.gr_gid)
            for member in group.gr_mem:
                with contextlib.suppress(KeyError):
                    uids.add(pwd.getpwnam(member).pw_uid)
        return cls(frozenset(uids), frozenset(gids))

    def trusts(self, peer: Peer) -> bool:
        return peer.uid in self.uids or peer.gid in self.gids


def without_powers(request: dict[str, Any], peer: Peer, op: str) -> dict[str, Any]:
    """An untrusted peer's request: its environment is dropped (no RELAYCLIENT, no
    TCPREMOTEIP, no DATABYTES…): a local injection. Logged when it tried to pass one."""
    env = request.get("env")
    names = sorted(str(k) for k in env) if isinstance(env, dict) else []
    claimed = [k for k in names if k in POWERS or k.startswith("TCP")]
    if claimed:
        log.warning("event=control_untrusted op=%s pid=%d uid=%d gid=%d ignored=%s",
                    op, peer.pid, peer.uid, peer.gid, ",".join(claimed))
    return {**request, "env": {}}


class ControlServer:
    """Accepts control connections and dispatches each request to its op handler."""

    def __init__(self, cfg: ControlConfig, handlers: Mapping[str, Handler],
                 metrics: Metrics) -> None:
        self._cfg = cfg
        self._handlers = dict(handlers)
        self._metrics = metrics
        self._listener: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._trust = Trust.from_config(cfg)
        metrics.declare("mailguard_control_requests_total", "counter",
                        "control socket requests by op and outcome")

    @property
    def path(self) -> str:
        return self._cfg.socket

    async def start(self, inherited: socket.socket | None = None) -> None:
        """Create the directory, replace a stale socket, bind, set mode/group, listen.
        `inherited`: a worker accepts on the socket its supervisor bound (and logged);
        the supervisor, not the worker, removes the file at the end."""
        if inherited is not None:
            self._listener = inherited  # no inode: close() leaves the file alone
            self._accepting = asyncio.create_task(self._accept_loop())
            return
        self._listener = _bind(self._cfg)
        st = os.stat(self._cfg.socket)
        self._inode = (st.st_dev, st.st_ino)
        self._accepting = asyncio.create_task(self._accept_loop())
        log.info("event=control_listening socket=%s", self._cfg.socket)

    async def close(self, grace_s: float) -> None:
        """Stop accepting, remove our socket file, let requests in flight finish (queue
        hand-overs must complete) for up to `grace_s`, then cancel what is left."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self._unlink_own()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _unlink_own(self) -> None:
        """Remove the socket file only if it is still ours (a new daemon may own it)."""
        try:
            st = os.stat(self._cfg.socket)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self._cfg.socket)
        except OSError:
            pass

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self._listener)
            except OSError as exc:  # EMFILE and the like: log, breathe, go on
                log.error("event=control_accept_failed error=%r", str(exc))
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        op = "?"
        with conn:
            conn.setblocking(False)

            async def reply(obj: Mapping[str, Any]) -> bool:
                try:
                    await loop.sock_sendall(conn, protocol.encode(obj))
                except OSError:  # the caller is gone: nothing to tell
                    return False
                return True

            try:
                request, fds = await asyncio.wait_for(recv_request(conn), REQUEST_TIMEOUT_S)
            except (TimeoutError, OSError, protocol.ProtocolError) as exc:
                log.warning("event=control_bad_request error=%r", str(exc))
                self._metrics.inc("mailguard_control_requests_total", op=op, outcome="bad")
                await reply({"error": f"bad request: {exc}"})
                return
            op = str(request.get("op", "?"))
            handler = self._handlers.get(op)
            if request.get("v") != protocol.VERSION or handler is None:
                protocol_close(fds)
                self._metrics.inc("mailguard_control_requests_total", op=op, outcome="bad")
                await reply({"error": f"unsupported request v={request.get('v')} op={op}"})
                return
            # socket_mode 0o666 lets any local user in (local injection): only trusted
            # peers' environments may grant relaying or say who the client is
            peer = peer_credentials(conn)
            if not self._trust.trusts(peer):
                request = without_powers(request, peer, op)
            try:
                await handler(request, fds, reply)
                self._metrics.inc("mailguard_control_requests_total", op=op, outcome="ok")
            except Exception as exc:  # one bad request must not take the daemon down
                log.exception("event=control_error op=%s error=%r", op, str(exc))
                self._metrics.inc("mailguard_control_requests_total", op=op, outcome="error")
                await reply({"error": "internal error"})


def protocol_close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


async def recv_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request line and its descriptors from a non-blocking socket. Received fds are
    close-on-exec (MSG_CMSG_CLOEXEC), so no queue program we spawn inherits a client's
    socket. On any error the fds received so far are closed."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    fds: list[int] = []
    try:
        while b"\n" not in buf:
            try:
                data, anc, flags, _ = conn.recvmsg(
                    65536, protocol.ANCILLARY_SPACE, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                await _readable(loop, conn)
                continue
            fds += protocol.unpack_fds(anc)
            if flags & socket.MSG_CTRUNC or len(fds) > protocol.MAX_FDS:
                raise protocol.ProtocolError("too many descriptors")
            if not data:
                raise protocol.ProtocolError("connection closed inside the request")
            buf += data
            if len(buf) > protocol.MAX_LINE:
                raise protocol.ProtocolError("request too long")
        end = buf.index(b"\n")
        if end + 1 != len(buf):
            raise protocol.ProtocolError("data after the request line")
        return protocol.decode(bytes(buf[:end])), fds
    except BaseException:
        protocol_close(fds)
        raise


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await fut
    finally:
        loop.remove_reader(conn.fileno())


def bind_control(cfg: ControlConfig) -> socket.socket:
    """The listening control socket, for a supervisor that shares it with its workers
    (logged here, as `start` logs it). Raises ControlError."""
    sock = _bind(cfg)
    log.info("event=control_listening socket=%s", cfg.socket)
    return sock


def _bind(cfg: ControlConfig) -> socket.socket:
    path = cfg.socket
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise ControlError(f"cannot create {directory}: {exc.strerror}") from None
    check_directory(directory)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # bind() creates the file with the umask applied; fchmod-then-bind is not possible
        # for unix sockets, so chmod right after, before listen() lets anyone in.
        sock.bind(path)
        os.chmod(path, cfg.socket_mode)
        if cfg.socket_group:
            os.chown(path, -1, _gid(cfg.socket_group))
        sock.listen(512)
        sock.setblocking(False)
    except (OSError, KeyError) as exc:
        sock.close()
        raise ControlError(f"cannot listen on {path}: {exc}") from None
    return sock


def _gid(group: str) -> int:
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def _remove_stale(path: str) -> None:
    """Remove a socket file left by a daemon that died; refuse if one still answers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ControlError(f"cannot probe {path}: {exc.strerror}") from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise ControlError(f"{path} is in use by another running daemon")


def check_directory(directory: str) -> None:
    """Refuse a socket directory in which another user could put their own socket first
    (and be handed the clients' connections and environments): one owned by someone other
    than root or the daemon's user, or one that it or a directory above it lets every
    user write to (o+w) without the sticky bit. Group-writable: a warning."""
    here = os.path.abspath(directory)
    owners = (0, os.geteuid())
    while True:
        try:
            st = os.stat(here)
        except OSError as exc:
            raise ControlError(f"cannot check {here}: {exc.strerror}") from None
        mode = stat.S_IMODE(st.st_mode)
        sticky = bool(mode & stat.S_ISVTX)
        if mode & stat.S_IWOTH and not sticky:
            raise UnsafeSocketDirectory(
                f"refusing to start: {here}, the control socket's directory or one above "
                f"it, is writable by every user (mode {mode:#o}): another user could bind the "
                f"socket first and be handed the clients' connections; use a directory "
                f"only root or the daemon's user can write (e.g. /run/mailguard, 0755), or "
                f"a sticky one (chmod +t)")
        if here == os.path.abspath(directory):
            if st.st_uid not in owners:
                raise UnsafeSocketDirectory(
                    f"refusing to start: the control socket's directory {here} belongs to "
                    f"uid {st.st_uid}, who could replace the socket: it must belong to "
                    f"root or the daemon's user")
            if mode & stat.S_IWGRP and not sticky:
                log.warning("event=control_directory_group_writable directory=%s gid=%d "
                            "note=members of that group could replace the socket", here,
                            st.st_gid)
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent
