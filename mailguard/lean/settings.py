"""The few settings the lean processes need, read without mailguard.config (dataclasses,
typing: ~30 ms) and, when possible, without tomllib (~25 ms with its `re`/`datetime`):

- the control socket: $MAILGUARD_CONTROL, else `[control] socket` of the configuration
  file ($MAILGUARD_CONFIG, else /etc/mailguard/mailguard.toml when it exists), else the
  default;
- on the failure path only: the host name for the 421 line.

A simple `key = "string"` / `key = number` line under a `[table]` header is read by a line
scan; anything fancier (dotted keys, inline tables, escapes) falls back to tomllib."""

from __future__ import annotations

import os

DEFAULT_CONFIG_PATH = "/etc/mailguard/mailguard.toml"  # = mailguard.config's
DEFAULT_CONTROL_SOCKET = "/run/mailguard/control.sock"  # = mailguard.settings.control's
DEFAULT_QMAIL_CONTROL_DIR = "/var/qmail/control"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours it)
if TYPE_CHECKING:
    from collections.abc import Mapping


class _Unsure(Exception):
    """The line scan cannot answer with certainty: use tomllib."""


def config_path(environ: Mapping[str, str]) -> str | None:
    path = environ.get("MAILGUARD_CONFIG")
    if path:
        return path
    return DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None


def lookup(environ: Mapping[str, str], table: str, key: str) -> object:
    """`[table] key` from the configuration file, or None (no file, no key, unreadable:
    the daemon's own start-up reports bad files; we fall back to defaults)."""
    path = config_path(environ)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:
        return quick_lookup(data.decode("utf-8"), table, key)
    except (_Unsure, UnicodeDecodeError):
        pass
    import tomllib  # noqa: PLC0415 - only for files the line scan cannot read

    try:
        section = tomllib.loads(data.decode("utf-8", "replace")).get(table)
    except tomllib.TOMLDecodeError:
        return None
    return section.get(key) if isinstance(section, dict) else None


def quick_lookup(text: str, table: str, key: str) -> object:
    """The value of `key` in `[table]` by a line scan; raises _Unsure when the file might
    say it in a form the scan does not read."""
    current = ""
    found: object = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if line.startswith("[["):
                current = "[["
                continue
            end = line.find("]")
            if end < 0:
                raise _Unsure
            current = line[1:end].strip().strip('"')
            continue
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq:
            continue  # a continuation of a multi-line value
        if name.split(".", 1)[0].strip().strip("\"'") == table or "\"" in name:
            raise _Unsure  # a dotted key or an inline table that may define our table
        if current == table and name == key:
            found = _scalar(value.strip())
    return found


def _scalar(value: str) -> object:
    if value[:1] in ('"', "'"):
        quote = value[0]
        end = value.find(quote, 1)
        if end < 0 or value.startswith(quote * 3):
            raise _Unsure
        text, rest = value[1:end], value[end + 1 :].strip()
        if (quote == '"' and "\\" in text) or (rest and not rest.startswith("#")):
            raise _Unsure
        return text
    number = value.split("#", 1)[0].strip().replace("_", "")
    try:
        return float(number) if "." in number else int(number, 0)
    except ValueError:
        raise _Unsure from None


def control_socket(environ: Mapping[str, str]) -> str:
    path = environ.get("MAILGUARD_CONTROL")
    if path:
        return path
    value = lookup(environ, "control", "socket")
    return value if isinstance(value, str) and value else DEFAULT_CONTROL_SOCKET


def hostname(environ: Mapping[str, str]) -> str:
    """qmail-smtpd's host name for our own 421: `[server] hostname`, else the first line
    of control/me (in `[server] qmail_control_dir`, default /var/qmail/control), else
    TCPLOCALHOST (the run script's `tcpserver -l "$LOCAL"`, usually me: it still names
    us when qmaild may not read the configuration file), else "localhost"."""
    name = lookup(environ, "server", "hostname")
    if isinstance(name, str) and name:
        return _safe(name)
    directory = lookup(environ, "server", "qmail_control_dir")
    if not isinstance(directory, str) or not directory:
        directory = DEFAULT_QMAIL_CONTROL_DIR
    try:
        with open(os.path.join(directory, "me"), "rb") as fh:
            line = fh.readline().rstrip(b" \t\n").decode("utf-8", "replace")
    except OSError:
        line = ""
    return _safe(line) or _safe(environ.get("TCPLOCALHOST", "")) or "localhost"


def _safe(text: str) -> str:
    return "".join(ch if " " < ch < "\x7f" else "?" for ch in text)
