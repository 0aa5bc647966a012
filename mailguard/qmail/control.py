"""qmail control files (/var/qmail/control), read with qmail's own rules, plus qmail-smtpd's
badmailfrom match (bmfcheck()). rcpthosts is matched by mailguard.domains.LocalDomains over
`server.local_domains`, into which config.resolve() merges rcpthosts and morercpthosts.cdb.

Reading rules, from control.c:
  control_readline — the first line, trailing " \\t\\n" stripped (not "\\r");
  control_readint  — that line as an unsigned decimal;
  control_readfile — every line, trailing " \\t\\n" stripped; empty lines and lines starting
                     with "#" skipped; leading blanks kept.
Defaults follow qmail-control(5) and qmail-smtpd: smtpgreeting, localiphost, defaultdomain
and plusdomain fall back to `me`; databytes 0 (no limit); timeoutsmtpd 1200 (0 means 1 s,
as in qmail-smtpd); tarpitcount 0 (off) and tarpitdelay 5 (tarpit patch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mailguard.errors import ConfigError
from mailguard.qmail.cdb import CdbError, CdbReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from collections.abc import Iterable

_STRIP = " \t\n"  # control.c striptrailingwhitespace(): exactly these three


@dataclass(frozen=True, slots=True)
class ControlFiles:
    """The control files qmail-smtpd (and qmail-inject) read, after qmail's defaults.

    `rcpthosts` is None when the file is missing: qmail-smtpd then accepts every recipient
    domain (an open relay) and ignores morercpthosts.cdb — callers must treat None with care.
    `morercpthosts` is the text file (qmail itself only consults the .cdb built from it by
    qmail-newmrh); `morercpthosts_cdb` is that cdb, or None.
    """

    me: str | None = None
    smtpgreeting: str | None = None
    localiphost: str | None = None
    rcpthosts: tuple[str, ...] | None = None
    morercpthosts: tuple[str, ...] = ()
    morercpthosts_cdb: CdbReader | None = None
    databytes: int = 0
    badmailfrom: tuple[str, ...] = ()
    timeoutsmtpd: int = 1200
    tarpitcount: int = 0
    tarpitdelay: int = 5
    defaultdomain: str | None = None
    plusdomain: str | None = None

    @property
    def greeting_host(self) -> str | None:
        """The first word of smtpgreeting: the host name qmail-smtpd puts in 250/221 replies."""
        if not self.smtpgreeting:
            return self.smtpgreeting
        return self.smtpgreeting.split(" ", 1)[0]


class _Dir:
    """Reads single files of one control directory, raising ConfigError with its name."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.directory, name, reason)

    def raw(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.directory, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None  # control.c: ENOENT means "not configured", anything else is fatal
        except OSError as e:
            raise self.error(name, f"unreadable: {e.strerror or e}") from e

    def text(self, name: str) -> str | None:
        data = self.raw(name)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(name, f"not UTF-8 at byte {e.start}") from e

    def line(self, name: str) -> str | None:
        """control_readline: the first line; an empty file gives ""."""
        text = self.text(name)
        if text is None:
            return None
        return text.split("\n", 1)[0].rstrip(_STRIP)

    def lines(self, name: str) -> tuple[str, ...] | None:
        """control_readfile (with flagme 0): non-empty lines not starting with "#"."""
        text = self.text(name)
        if text is None:
            return None
        return tuple(_entries(text.split("\n")))

    def number(self, name: str, default: int) -> int:
        """control_readint, but strict: qmail's scan_ulong would take "12k" as 12 and ignore
        "abc"; a typo in a limit should be an error, not a silent default."""
        line = self.line(name)
        if line is None:
            return default
        if not (line.isascii() and line.isdigit()):
            raise self.error(name, f"not a non-negative decimal number: {line!r}")
        return int(line)


def _entries(lines: Iterable[str]) -> Iterable[str]:
    for line in lines:
        entry = line.rstrip(_STRIP)
        if entry and not entry.startswith("#"):
            yield entry


def read_control(directory: str | os.PathLike[str]) -> ControlFiles:
    """Read a qmail control directory. Missing files get qmail's defaults; a missing
    directory, an unreadable file or a malformed number raises ConfigError."""
    path = os.fspath(directory)
    if not os.path.isdir(path):
        raise ConfigError(path, "", "not a directory")
    d = _Dir(path)
    me = d.line("me")
    cdb: CdbReader | None = None
    cdb_bytes = d.raw("morercpthosts.cdb")
    if cdb_bytes is not None:
        try:
            cdb = CdbReader(cdb_bytes)
        except CdbError as e:
            raise d.error("morercpthosts.cdb", str(e)) from e
    return ControlFiles(
        me=me,
        # control_rldef(..., flagme=1, 0): the file, else me.
        smtpgreeting=_or(d.line("smtpgreeting"), me),
        localiphost=_or(d.line("localiphost"), me),
        rcpthosts=d.lines("rcpthosts"),
        morercpthosts=d.lines("morercpthosts") or (),
        morercpthosts_cdb=cdb,
        databytes=d.number("databytes", 0),
        badmailfrom=d.lines("badmailfrom") or (),
        # qmail-smtpd.c setup(): `if (timeout <= 0) timeout = 1;` (0 is one second)
        timeoutsmtpd=max(1, d.number("timeoutsmtpd", 1200)),
        tarpitcount=d.number("tarpitcount", 0),
        tarpitdelay=d.number("tarpitdelay", 5),
        defaultdomain=_or(d.line("defaultdomain"), me),
        plusdomain=_or(d.line("plusdomain"), me),
    )


def _or(value: str | None, fallback: str | None) -> str | None:
    # control_rldef only falls back when the file is missing; an empty file gives "".
    return fallback if value is None else value


def badmailfrom_match(addr: str, entries: Iterable[str]) -> bool:
    """qmail-smtpd's bmfcheck(): the whole address, or "@domain" from its last "@",
    matched case-insensitively (constmap). The null sender "" matches no entry."""
    lowered = {e.lower() for e in entries}
    addr = addr.lower()
    if addr in lowered:
        return True
    at = addr.rfind("@")
    return at != -1 and addr[at:] in lowered


# --- reloading: what qmail-smtpd rereads on every connection --------------------------------

# The files read above that shape an SMTP session; a change to any of them (content,
# replacement by rename as qmail-newmrh does, creation, removal) changes `signature`.
WATCHED = ("me", "smtpgreeting", "localiphost", "rcpthosts", "morercpthosts.cdb",
           "badmailfrom", "databytes", "timeoutsmtpd", "tarpitcount", "tarpitdelay",
           "servercert.pem")

Signature = tuple[tuple[int, int, int, int], ...]


def signature(directory: str) -> Signature:
    """One stat per watched file (inode, size, mtime, ctime; zeros when missing): cheap
    enough to compare on every connection, as qmail-smtpd rereads its files per session."""
    out: list[tuple[int, int, int, int]] = []
    for name in WATCHED:
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            out.append((0, 0, 0, 0))
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


# --- the texts that differ between qmail releases ------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpdTexts:
    """Replies whose words depend on the qmail-smtpd release (HELP names its home page,
    the bare-LF refusal a URL). Defaults: notqmail 1.09's."""

    help: str = "notqmail home page: https://notqmail.org"
    bare_lf: str = "See https://cr.yp.to/docs/smtplf.html."


def smtpd_texts(control_dir: str) -> SmtpdTexts:
    """The texts of the qmail-smtpd being replaced, read from its binary next to the
    control directory (`<qmail>/bin/qmail-smtpd` for `<qmail>/control`): qmail-1.03 and
    netqmail say `214 qmail home page: http://pobox.com/~djb/qmail.html`, notqmail its
    own page. No binary (or no such string in it): the defaults."""
    import re  # noqa: PLC0415 - only at start-up and reload, never on a lean path

    default = SmtpdTexts()
    if not control_dir:
        return default
    qmail_home = os.path.dirname(os.path.normpath(control_dir))
    try:
        with open(os.path.join(qmail_home, "bin", "qmail-smtpd"), "rb") as fh:
            data = fh.read(8 << 20)
    except OSError:
        return default
    help_text = re.search(rb"(?<![ -~])214 ([ -~]{1,200})\r\n\x00", data)
    bare_lf = re.search(rb"(?<![ -~])451 (See [ -~]{1,200}smtplf\.html\.)\r\n\x00", data)
    return SmtpdTexts(
        help=help_text.group(1).decode("ascii") if help_text else default.help,
        bare_lf=bare_lf.group(1).decode("ascii") if bare_lf else default.bare_lf,
    )
