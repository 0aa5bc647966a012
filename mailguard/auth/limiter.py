"""Failed logins per client IP, in this daemon process's memory.

Bounded: at most `max_ips` addresses are remembered (the least recently failing one is
dropped first) and each keeps only its last `max_failures` timestamps, so a flood of
addresses costs bounded memory. Not shared: each worker process and each MX host counts
on its own, so an attacker spreading over N of them gets N times the attempts."""

from __future__ import annotations

from collections import OrderedDict, deque


class FailureCounter:
    def __init__(self, max_failures: int, window_s: float, max_ips: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_ips = max_ips
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()

    def count(self, ip: str, now: float) -> int:
        """Failures from `ip` within the window ending at `now` (monotonic seconds)."""
        times = self._fails.get(ip)
        if times is None:
            return 0
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._fails[ip]
            return 0
        return len(times)

    def blocked(self, ip: str, now: float) -> bool:
        return self.count(ip, now) >= self.max_failures

    def add(self, ip: str, now: float) -> int:
        """Record one failure; returns the failures within the window, this one included."""
        self.count(ip, now)
        times = self._fails.pop(ip, None) or deque(maxlen=self.max_failures)
        times.append(now)
        self._fails[ip] = times  # most recent at the end
        while len(self._fails) > self.max_ips:
            self._fails.popitem(last=False)
        return len(times)

    def __len__(self) -> int:
        return len(self._fails)
