"""Configuration: frozen dataclasses declared once (units in the names), a strict TOML
loader (unknown keys, wrong types and bad values name the file, key and reason), and
command-line overrides. Lean entry points import this module: standard library only."""

from __future__ import annotations

import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar

from mailguard import registry
from mailguard.errors import ConfigError
from mailguard.policy import CheckPolicy, Mode
from mailguard.settings.alerts import AlertsConfig
from mailguard.settings.auth import AuthConfig, TlsConfig
from mailguard.settings.base import Invalid, parse_hostport
from mailguard.settings.control import ControlConfig
from mailguard.settings.dns import DnsConfig
from mailguard.settings.dnsbl import DnsblConfig
from mailguard.settings.greylist import GreylistConfig
from mailguard.settings.limits import LimitsConfig, TarpitConfig
from mailguard.settings.metrics import MetricsConfig
from mailguard.settings.qmail_watch import QmailWatchConfig
from mailguard.settings.quarantine import QuarantineConfig
from mailguard.settings.queue import QueueConfig
from mailguard.settings.scan import ClamdConfig, ScanConfig, SpamConfig, SpamdConfig
from mailguard.settings.spf import SpfConfig
from mailguard.settings.stats import StatsConfig
from mailguard.settings.virus import VirusConfig
from mailguard.settings.web import WebConfig
from mailguard.verdict import Stage

T = TypeVar("T")

DEFAULT_CONFIG_PATH = "/etc/mailguard/mailguard.toml"
DEFAULT_STORE_URL = "sqlite+aiosqlite:////var/lib/mailguard/mailguard.db"
# [server] spool_threshold_bytes: a page at least; at most what a message may cost in RAM
SPOOL_THRESHOLD_MIN = 4096
SPOOL_THRESHOLD_MAX = 64 << 20


@dataclass(frozen=True)
class ServerConfig:
    """The SMTP front end. Unset (empty/None) qmail-like values come from the qmail
    control files when `qmail_control_dir` is set, else from the defaults noted."""

    listen: tuple[str, ...] = ("127.0.0.1:2525",)  # HOST:PORT, [v6]:PORT; repeatable
    hostname: str = ""  # qmail `me`; default "localhost"
    greeting: str = ""  # qmail `smtpgreeting` (first word = host name); default hostname
    localiphost: str = ""  # qmail `localiphost`: `u@[our.ip]` becomes `u@localiphost`
    local_domains: tuple[str, ...] = ()  # qmail `rcpthosts`; a leading "." matches subdomains
    relay_networks: tuple[str, ...] = ()  # CIDRs allowed to relay: the daemon's RELAYCLIENT
    badmailfrom: tuple[str, ...] = ()  # senders (addr or @domain) refused at RCPT
    databytes: int | None = None  # max message bytes, 0 = no limit (qmail `databytes`)
    timeout_s: int | None = None  # idle timeout per command (qmail `timeoutsmtpd`, 1200)
    # SIZE, SMTPUTF8, STARTTLS, AUTH beyond qmail-smtpd's EHLO (docs/drop-in.md); unset =
    # on for our own listeners, off (qmail-smtpd's exact dialogue) for drop-in sessions
    extensions: bool | None = None
    max_connections: int = 500  # total concurrent sessions; more get 421
    max_connections_per_ip: int = 20  # concurrent sessions per client IP; more get 421
    max_hops: int = 100  # Received/Delivered-To lines that mean a loop (qmail: 100)
    # distinct recipients per message (qmail: no limit; RFC 5321 4.5.3.1.8: at least
    # 100); past it RCPT gets 452 4.5.3 (4.5.3.1.10). Repeated recipients count once.
    max_rcpts: int = 1000
    # DATA in all, from the 354 to the final dot, and a whole connection in all: the
    # idle timeout_s restarts with every line, so a trickling client is bounded by these
    # (451 timeout / 421, then close), enforced only while waiting for the client: a
    # check or a hand-over in progress is never cut short
    data_timeout_s: float = 600.0
    session_timeout_s: float = 3600.0
    # with databytes = 0 ("no limit", as qmail) a bigger message still gets 552: it
    # bounds the disk a message may take in spool_dir; 0 = truly unbounded
    max_message_bytes: int = 100_000_000
    # messages bigger than this are received into an unlinked temporary file in
    # spool_dir (docs/spooling.md): what a message costs in memory stays about this
    spool_threshold_bytes: int = 1_048_576
    # where (empty: `<[delivery] spool>/.incoming` for the Maildir method, else /var/tmp)
    spool_dir: str = ""
    shutdown_grace_s: float = 30.0  # SIGTERM: time for transactions in flight to finish
    qmail_control_dir: str = ""  # e.g. /var/qmail/control; empty = don't read control files
    # processes serving the listeners (docs/workers.md): 1 = the daemon alone, N = a
    # supervisor and N workers sharing the sockets, 0 = one per core (os.cpu_count())
    workers: int = 1

    def validate(self) -> None:
        if not self.listen:
            raise Invalid("listen", "at least one HOST:PORT is needed")
        for item in self.listen:
            try:
                parse_hostport(item)
            except ValueError as exc:
                raise Invalid("listen", str(exc)) from None
        for net in self.relay_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise Invalid("relay_networks", f"{net!r} is not a CIDR network") from None
        _nonneg("databytes", self.databytes)
        _nonneg("max_message_bytes", self.max_message_bytes)
        _positive("timeout_s", self.timeout_s)
        _positive("max_connections", self.max_connections)
        _positive("max_connections_per_ip", self.max_connections_per_ip)
        _positive("max_hops", self.max_hops)
        _positive("max_rcpts", self.max_rcpts)
        _positive("data_timeout_s", self.data_timeout_s)
        _positive("session_timeout_s", self.session_timeout_s)
        _nonneg("shutdown_grace_s", self.shutdown_grace_s)
        _nonneg("workers", self.workers)
        if not SPOOL_THRESHOLD_MIN <= self.spool_threshold_bytes <= SPOOL_THRESHOLD_MAX:
            raise Invalid("spool_threshold_bytes", f"must be between {SPOOL_THRESHOLD_MIN} "
                          f"and {SPOOL_THRESHOLD_MAX}, got {self.spool_threshold_bytes}")
        if self.spool_dir and not os.path.isabs(self.spool_dir):
            raise Invalid("spool_dir", f"must be an absolute path, got {self.spool_dir!r}")


@dataclass(frozen=True)
class DeliveryConfig:
    """Where accepted mail goes: the embedded Maildir spool or the real qmail-queue."""

    method: str = "maildir"  # one of registry.DELIVERY_METHODS
    spool: str = "/var/spool/mailguard"  # Maildir root: <spool>/<domain>/<user>/new
    qmail_queue: str = "/var/qmail/bin/qmail-queue"  # program with qmail-queue's protocol
    timeout_s: float = 600.0  # a qmail-queue run taking longer is killed → 451

    def validate(self) -> None:
        _positive("timeout_s", self.timeout_s)
        if self.method not in registry.DELIVERY_METHODS:
            choices = ", ".join(repr(m) for m in registry.DELIVERY_METHODS)
            raise Invalid("method", f"must be one of {choices}, got {self.method!r}")
        if self.method == "maildir" and not self.spool:
            raise Invalid("spool", "a spool directory is needed for method = 'maildir'")


@dataclass(frozen=True)
class StoreConfig:
    """Shared state: SQLite file by default, PostgreSQL URL to share it between MX hosts."""

    url: str = DEFAULT_STORE_URL

    def validate(self) -> None:
        scheme = self.url.partition(":")[0].partition("+")[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise Invalid("url", f"unsupported database {scheme!r}: use sqlite or postgresql")


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["logfmt", "json"] = "logfmt"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    dnsbl: DnsblConfig = field(default_factory=DnsblConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    tarpit: TarpitConfig = field(default_factory=TarpitConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    greylist: GreylistConfig = field(default_factory=GreylistConfig)
    spf: SpfConfig = field(default_factory=SpfConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    clamd: ClamdConfig = field(default_factory=ClamdConfig)
    spamd: SpamdConfig = field(default_factory=SpamdConfig)
    spam: SpamConfig = field(default_factory=SpamConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    virus: VirusConfig = field(default_factory=VirusConfig)
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    qmail_watch: QmailWatchConfig = field(default_factory=QmailWatchConfig)
    # feature sections: one line each, the dataclass in mailguard/settings/<feature>.py
    checks: Mapping[str, CheckPolicy] = field(default_factory=dict)
    source: str = "(defaults)"  # where the config came from, for messages

    def validate(self) -> None:
        if self.spam.default_action == "quarantine" and not self.quarantine.enabled:
            raise Invalid("spam.default_action", "'quarantine' needs quarantine.directory")
        for name, pol in self.checks.items():
            if name not in registry.check_names():  # the registry's, mailguard/registry.py
                known = ", ".join(registry.check_names())
                raise Invalid(f"checks.{name}", f"unknown check (known: {known})")
            if registry.check_spec(name).always_enforced and pol.mode is not Mode.ENFORCE:
                raise Invalid(f"checks.{name}.mode", f"{name} control is always enforced")

    def policy(self, check: str) -> CheckPolicy:
        """The check's effective policy: what `[checks.<name>]` set over its default."""
        known = self.checks.get(check)
        if known is not None:
            return known
        return registry.check_spec(check).default_policy(self)


def _positive(key: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise Invalid(key, f"must be > 0, got {value}")


def _nonneg(key: str, value: float | None) -> None:
    if value is not None and value < 0:
        raise Invalid(key, f"must be >= 0, got {value}")


# --- the strict, typed builder ------------------------------------------------------------

def _convert(value: Any, tp: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], source, key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(source, key, f"must be one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(source, key, f"must be a list, got {type(value).__name__}")
        return tuple(_convert(v, args[0], source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict):
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"must be a table, got {type(value).__name__}")
        return {k: _convert(v, args[1], source, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(source, key, f"must be one of {choices}, got {value!r}") from None
    if is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, source, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(source, key, f"unsupported type {tp!r}")  # a bug in a declaration


def build(cls: type[T], data: Any, source: str, prefix: str = "") -> T:
    """Build dataclass `cls` from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(source, prefix or "(top)", f"must be a table, got {data!r}")
    assert is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init and f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in known:
            names = ", ".join(sorted(known))
            raise ConfigError(source, path, f"unknown key (known keys here: {names})")
        kwargs[key] = _convert(value, hints[key], source, path)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except Invalid as exc:
            raise ConfigError(source, f"{prefix}.{exc.key}" if prefix else exc.key,
                              exc.reason) from None
    return obj


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read the TOML file (None = defaults only), apply command-line overrides (a nested
    mapping such as {"server": {"listen": [...]}}: a flag replaces the file's value),
    validate, and resolve values from the qmail control directory when configured."""
    data: dict[str, Any] = {}
    source = "(command line)"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(source, "(file)", "no such file") from None
        except PermissionError:
            raise ConfigError(source, "(file)", "permission denied") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "(syntax)", str(exc)) from None
    if overrides:
        data = _merge(data, overrides)
    config = build(Config, data, source)
    config = replace(config, source=source)
    return with_check_defaults(resolve(config), data.get("checks", {}))


def with_check_defaults(config: Config, written: Mapping[str, Any]) -> Config:
    """Every registered check's effective policy: its default (which may come from its
    own section, e.g. `[clamd] on_error`), then the keys `[checks.<name>]` wrote."""
    effective: dict[str, CheckPolicy] = {}
    for spec in registry.CHECKS:
        policy = spec.default_policy(config)
        keys = written.get(spec.name, {})
        given = config.checks.get(spec.name)
        if given is not None and isinstance(keys, Mapping):
            policy = replace(policy, **{k: getattr(given, k) for k in keys})
        effective[spec.name] = policy
    return replace(config, checks=effective)


def resolve(config: Config) -> Config:
    """Fill unset server values from qmail's control files (if a control dir is set),
    then from the defaults; domains from rcpthosts/morercpthosts are added to the list."""
    server = config.server
    tarpit = config.tarpit
    if server.qmail_control_dir:
        from mailguard.qmail.control import read_control  # noqa: PLC0415 - only when used

        ctl = read_control(server.qmail_control_dir)
        tarpit = tarpit.filled(ctl.tarpitcount, ctl.tarpitdelay)  # tarpit patch's files
        # qmail reads rcpthosts and morercpthosts.cdb (not the text morercpthosts, which is
        # only qmail-newmrh's input). A missing rcpthosts makes qmail an open relay; here
        # it just adds no domain.
        more = (k.decode("utf-8", "replace") for k in ctl.morercpthosts_cdb or ())
        domains = list(dict.fromkeys((*server.local_domains, *(ctl.rcpthosts or ()), *more)))
        server = replace(
            server,
            hostname=server.hostname or ctl.me or "",
            greeting=server.greeting or ctl.smtpgreeting or "",
            localiphost=server.localiphost or ctl.localiphost or "",
            local_domains=tuple(domains),
            badmailfrom=tuple(dict.fromkeys((*server.badmailfrom, *ctl.badmailfrom))),
            databytes=server.databytes if server.databytes is not None else ctl.databytes,
            timeout_s=server.timeout_s if server.timeout_s is not None else ctl.timeoutsmtpd,
        )
    hostname = server.hostname or "localhost"
    server = replace(
        server,
        hostname=hostname,
        greeting=server.greeting or hostname,
        localiphost=server.localiphost or hostname,
        databytes=server.databytes if server.databytes is not None else 0,
        timeout_s=server.timeout_s if server.timeout_s is not None else 1200,
    )
    return replace(config, server=server, tarpit=tarpit.filled(0, 5))


def to_toml(config: Config) -> str:
    """The effective configuration as TOML (what `mailguard config check` prints)."""
    lines: list[str] = [f"# effective configuration from {config.source}"]
    for f_section in fields(config):
        section = f_section.name
        obj = getattr(config, section)
        if not is_dataclass(obj):
            continue
        lines.append(f"\n[{section}]")
        for f in fields(obj):
            if getattr(obj, f.name) is None:  # unset (TOML has no null): left out, noted
                lines.append(f"# {f.name}: unset")
                continue
            lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    for spec in registry.CHECKS:  # in run order, every check, defaults included
        pol = config.policy(spec.name)
        stages = ", ".join(str(s) for s in sorted(spec.stages, key=list(Stage).index))
        lines.append(f"\n[checks.{spec.name}]  # {spec.about}; stages: {stages}")
        for f in fields(pol):
            lines.append(f"{f.name} = {_toml_value(getattr(pol, f.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if is_dataclass(value) and not isinstance(value, type):
        items = (f"{f.name} = {_toml_value(getattr(value, f.name))}" for f in fields(value))
        return "{ " + ", ".join(items) + " }"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '""  # unset'
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "DeliveryConfig",
    "Invalid",
    "LogConfig",
    "ServerConfig",
    "StoreConfig",
    "build",
    "load",
    "parse_hostport",
    "resolve",
    "to_toml",
]
