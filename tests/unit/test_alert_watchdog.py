"""The watchdog's decision, walked through time: a scanner down for scanner_down_s, a
DNSBL zone disabled by its probe, queue hand-off failures counted in a sliding window."""

from __future__ import annotations

from mailguard.notify.watchdog import WatchState, assess
from mailguard.settings.alerts import AlertsConfig

CFG = AlertsConfig(scanner_down_s=300, handoff_failures=3, handoff_window_s=600)
H = "mx1"


def look(state: WatchState, now: float, *, clamd: float = 1, zone: float = 1,
         failed: float = 0, accepted: float = 0) -> tuple[list[str], set[str]]:
    found, fine = assess(
        state, now=now, cfg=CFG, host=H,
        scanners=[({"scanner": "clamd"}, clamd)],
        zones=[({"zone": "bl.test"}, zone)],
        handoffs=[({"method": "qmail-queue", "result": "accepted"}, accepted),
                  ({"method": "qmail-queue", "result": "refused"}, failed)])
    return [f.key for f in found], fine


def test_scanner_down_only_after_scanner_down_s() -> None:
    state = WatchState()
    assert look(state, 0, clamd=0)[0] == []
    assert look(state, 299, clamd=0)[0] == []
    found, fine = look(state, 300, clamd=0)
    assert found == ["scanner:clamd:mx1"] and "scanner:clamd:mx1" not in fine
    found, fine = look(state, 330, clamd=1)  # a scan got an answer: over, and forgotten
    assert found == [] and "scanner:clamd:mx1" in fine
    assert look(state, 340, clamd=0)[0] == []  # down again: the wait starts anew


def test_dnsbl_zone_disabled_at_once() -> None:
    state = WatchState()
    found, fine = look(state, 0, zone=0)
    assert found == ["dnsbl:bl.test:mx1"] and "dnsbl:bl.test:mx1" not in fine
    assert "dnsbl:bl.test:mx1" in look(state, 30, zone=1)[1]


def test_handoff_failures_in_a_sliding_window() -> None:
    state = WatchState()
    state.handoffs.append((0.0, 0.0))
    assert look(state, 30, failed=2, accepted=100)[0] == []
    found, _ = look(state, 60, failed=3, accepted=100)
    assert found == ["queue-handoff:mx1"]
    # no new failures: once the failures are older than the window, it is over
    assert look(state, 600, failed=3)[0] == ["queue-handoff:mx1"]
    found, fine = look(state, 700, failed=3)
    assert found == [] and "queue-handoff:mx1" in fine
    # accepted hand-offs never count
    assert look(state, 800, failed=3, accepted=10**6)[0] == []


def test_handoff_watch_off() -> None:
    found, fine = assess(WatchState(), now=0, cfg=AlertsConfig(handoff_failures=0), host=H,
                         scanners=[], zones=[],
                         handoffs=[({"result": "error"}, 1000.0)])
    assert found == [] and fine == set()
