"""The one table of checks and delivery methods.

Everything that needs to know which checks exist reads it: the configuration
(`[checks.<name>]` names, each check's default policy), the daemon's assembly (build order
= run order), `mailguard config check`. Builders are named as "module:function" and
imported only when the daemon assembles itself, so reading the table stays cheap and
this module imports no check.

Adding a check is one module (the Check class and its builder) plus one line in CHECKS;
adding a delivery method is one module plus one line in DELIVERIES (docs/DEVELOPING.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailguard.policy import CheckPolicy, Mode, OnError
from mailguard.verdict import Stage

if TYPE_CHECKING:
    from mailguard.config import Config

# A check's default policy: fixed, or derived from its own settings section.
DefaultPolicy = CheckPolicy | Callable[["Config"], CheckPolicy]

ENFORCE = CheckPolicy()
OFF = CheckPolicy(mode=Mode.OFF)


@dataclass(frozen=True)
class CheckSpec:
    """One check: `builder` ("module:function") is called as `builder(resources, policy)`
    and returns `(check, policy)` (the policy may grow, e.g. by a deliberate delay)."""

    name: str
    stages: frozenset[Stage]
    builder: str
    default: DefaultPolicy = ENFORCE
    section: str = ""  # its own settings section, if any
    always_enforced: bool = False  # `[checks.<name>] mode` may not be changed
    about: str = ""

    def default_policy(self, config: Config) -> CheckPolicy:
        return self.default(config) if callable(self.default) else self.default

    def load_builder(self) -> Callable[..., Any]:
        return _load(self.builder)


def _load(builder: str) -> Callable[..., Any]:
    """"module:function" → the function (imported now, not when the table is read)."""
    module, _, func = builder.partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def scanner_policy(enabled: bool, on_error: str, deadline_s: float) -> CheckPolicy:
    """A scanner runs when its section configures it; its `on_error` ("pass" = open) and
    the scan deadline are its policy unless `[checks.<name>]` says otherwise."""
    return CheckPolicy(
        mode=Mode.ENFORCE if enabled else Mode.OFF,
        timeout_s=deadline_s,
        on_error=OnError.OPEN if on_error == "pass" else OnError.TEMPFAIL,
    )


def _clamd_default(config: Config) -> CheckPolicy:
    return scanner_policy(config.clamd.enabled, config.clamd.on_error, config.scan.deadline_s)


def _spamd_default(config: Config) -> CheckPolicy:
    return scanner_policy(bool(config.spamd.servers), config.spamd.on_error,
                          config.scan.deadline_s)


S = Stage
# In run order. Relay control comes before greylisting (only deliverable recipients are
# greylisted), the tarpit after the checks that refuse (only accepted RCPTs wait), limits
# last (it counts only mail the hand-over accepted); SPF at MAIL, before greylisting,
# which may key on its result.
CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("dnsbl", frozenset({S.CONNECT}), "mailguard.checks.dnsbl:build_dnsbl",
              section="dnsbl", about="DNS blocklists, decided at CONNECT, enforced at RCPT"),
    CheckSpec("spf", frozenset({S.MAIL}), "mailguard.checks.spf:build_spf", OFF,
              section="spf", about="SPF of the sender domain"),
    CheckSpec("badmailfrom", frozenset({S.RCPT}), "mailguard.checks.relay:build_badmailfrom",
              about="qmail's badmailfrom"),
    CheckSpec("relay", frozenset({S.RCPT}), "mailguard.checks.relay:build_relay",
              always_enforced=True, about="no relaying for strangers (rcpthosts)"),
    CheckSpec("greylist", frozenset({S.RCPT}), "mailguard.checks.greylist:build_greylist",
              OFF, section="greylist", about="greylisting of (client, sender, recipient)"),
    CheckSpec("tarpit", frozenset({S.RCPT}), "mailguard.checks.tarpit:build_tarpit",
              section="tarpit", about="qmail's per-connection tarpit"),
    CheckSpec("limits", frozenset({S.MAIL, S.RCPT}),
              "mailguard.checks.limits:build_limits", section="limits",
              about="per-user outbound limits"),
    CheckSpec("clamd", frozenset({S.QUEUE}), "mailguard.checks.virus_scan:build_clamd",
              _clamd_default, section="clamd", about="virus scanning (ClamAV)"),
    CheckSpec("spamd", frozenset({S.QUEUE}), "mailguard.checks.spam_scan:build_spamd",
              _spamd_default, section="spamd",
              about="spam scanning (SpamAssassin), per-recipient dispositions"),
)



def check_names() -> tuple[str, ...]:
    """The names `[checks.<name>]` may use, in run order."""
    return tuple(spec.name for spec in CHECKS)


def check_spec(name: str) -> CheckSpec:
    """The registry entry of `name` (KeyError if there is none)."""
    for spec in CHECKS:
        if spec.name == name:
            return spec
    raise KeyError(name)


@dataclass(frozen=True)
class DeliverySpec:
    """One delivery method (`[delivery] method`): `builder` ("module:function") is called
    as `builder(config, clock)` and returns a Delivery; `flag` is the `mailguard serve`
    option that selects it with its one setting."""

    name: str
    builder: str
    flag: str
    setting: str  # the [delivery] key the flag sets
    metavar: str
    about: str

    def load_builder(self) -> Callable[..., Any]:
        return _load(self.builder)


DELIVERIES: tuple[DeliverySpec, ...] = (
    DeliverySpec("maildir", "mailguard.delivery.methods:build_maildir", "--spool", "spool",
                 "DIR", "deliver into Maildirs under DIR (<DIR>/<domain>/<user>/new)"),
    DeliverySpec("qmail-queue", "mailguard.delivery.methods:build_qmail_queue",
                 "--qmail-queue", "qmail_queue", "PROGRAM",
                 "hand over to PROGRAM with qmail-queue's protocol"),
)

DELIVERY_METHODS: tuple[str, ...] = tuple(d.name for d in DELIVERIES)
