"""How the runner treats a check: its mode and failure policy (declared by configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    OFF = "off"  # not run at all
    LOG = "log"  # shadow mode: decide and record, never act
    ENFORCE = "enforce"


class OnError(StrEnum):
    TEMPFAIL = "tempfail"  # the safe default: the client retries later
    OPEN = "open"  # go on as if the check passed: logged and counted


@dataclass(frozen=True, slots=True)
class CheckPolicy:
    """`[checks.<name>]`: mode, per-check timeout, what an error means."""

    mode: Mode = Mode.ENFORCE
    timeout_s: float = 30.0  # the runner cancels the check after this long
    on_error: OnError = OnError.TEMPFAIL
