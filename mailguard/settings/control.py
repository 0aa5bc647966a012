"""`[control]`: the daemon's unix control socket, through which the lean per-connection
`mailguard smtpd` and per-message `mailguard queue` hand their work to the daemon."""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.settings.base import Invalid

DEFAULT_CONTROL_SOCKET = "/run/mailguard/control.sock"


@dataclass(frozen=True)
class ControlConfig:
    enabled: bool = True  # false: no control socket (drop-in processes then fail safe)
    socket: str = DEFAULT_CONTROL_SOCKET  # path; its directory is created at start-up
    socket_mode: int = 0o660  # permissions of the socket file (qmaild/qmailq must connect)
    socket_group: str = ""  # group name or number for the socket file; "" = leave as is
    # programs a drop-in session's QMAILQUEUE may name (absolute paths), besides
    # delivery.qmail_queue: the daemon runs them with its own rights, so any other value
    # is ignored (logged) and the session's mail takes the daemon's own delivery
    qmailqueue_allowed: tuple[str, ...] = ()
    # who may hand over an environment with powers (RELAYCLIENT, TCPREMOTEIP, DATABYTES,
    # RBLSMTPD, QMAILQUEUE, …), by the peer's credentials (SO_PEERCRED): user names or ids,
    # and groups (a peer whose group, or a member of one, is listed); root and the
    # daemon's own user always may. Anyone else's request runs without its environment,
    # as local injection. A name that does not exist is logged and ignored.
    trusted_users: tuple[str, ...] = ("qmaild",)
    trusted_groups: tuple[str, ...] = ()

    def validate(self) -> None:
        if not self.socket.startswith("/"):
            raise Invalid("socket", f"must be an absolute path, got {self.socket!r}")
        if len(self.socket.encode()) > 107:  # sun_path holds 108 bytes with the NUL
            raise Invalid("socket", "path too long for a unix socket (max 107 bytes)")
        for program in self.qmailqueue_allowed:
            if not program.startswith("/"):
                raise Invalid("qmailqueue_allowed", f"must be absolute paths, got {program!r}")
        for key, names in (("trusted_users", self.trusted_users),
                           ("trusted_groups", self.trusted_groups)):
            for name in names:
                if not name or name != name.strip():
                    raise Invalid(key, f"must be names or numeric ids, got {name!r}")
        if not 0 <= self.socket_mode <= 0o777:
            raise Invalid("socket_mode", f"must be a permission mode such as 0o660, "
                          f"got {self.socket_mode:#o}")
