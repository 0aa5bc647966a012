"""Failed logins per client IP, in this daemon process's memory.

Bounded: at most `max_ips` addresses are remembered (the least recently failing one is
dropped first) and each keeps only its last `max_failures` timestamps, so a flood of
addresses costs bounded memory. An attempt is counted before its password is verified
(`begin` ... `end`): attempts in flight count against the limit, so parallel sessions
cannot all reach the backend before the first failures are recorded. Per process: this is
only SmtpAuth's first gate; the count every worker and MX host shares, which decides, is
in the store (mailguard.store.auth_attempts)."""

from __future__ import annotations

from collections import OrderedDict, deque


class FailureCounter:
    def __init__(self, max_failures: int, window_s: float, max_ips: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_ips = max_ips
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()
        self._in_flight: dict[str, int] = {}  # attempts being verified now, per IP

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
        """True when failures plus attempts in flight from `ip` reach the limit."""
        return self.count(ip, now) + self._in_flight.get(ip, 0) >= self.max_failures

    def begin(self, ip: str, now: float) -> bool:
        """Reserve one attempt for `ip` before verifying it; False (nothing reserved)
        when the limit is reached. No await between the test and the reservation, so
        it is atomic within one event loop. Every True must be followed by `end`."""
        if self.blocked(ip, now):
            return False
        self._in_flight[ip] = self._in_flight.get(ip, 0) + 1
        return True

    def end(self, ip: str, now: float, *, failed: bool) -> int:
        """Release the attempt reserved by `begin`; a failure is recorded in the same
        step. Returns the failures within the window."""
        left = self._in_flight.get(ip, 0) - 1
        if left > 0:
            self._in_flight[ip] = left
        else:
            self._in_flight.pop(ip, None)
        return self.add(ip, now) if failed else self.count(ip, now)

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
