"""Virus scanning with clamd at the QUEUE stage (one zINSTREAM scan of the whole message).

Infected → 554 for everybody and `facts["virus"]` (the QUEUE stage sends the warnings);
too large for clamd → `[clamd] on_too_large`; clamd down → an error, which the runner
turns into `451 virus scanner unavailable` or, with `on_error = "open"` (`[clamd]
on_error = "pass"`), into delivery with `X-MailGuard-Virus-Scan: unscanned (error)`."""

from __future__ import annotations

import logging

from mailguard.context import Session
from mailguard.errors import PermanentError, TemporaryError
from mailguard.headers import header_line, sanitise
from mailguard.metrics import Metrics
from mailguard.policy import CheckPolicy
from mailguard.resources import Resources
from mailguard.scanners.clamd import ClamdClient, Infected, TooLarge
from mailguard.settings.scan import ClamdConfig
from mailguard.verdict import Action, Outcome, Reply, Stage, Verdict, reject, tempfail

log = logging.getLogger("mailguard.scan")

SCAN_METRIC = "mailguard_scan_total"
SCAN_SECONDS = "mailguard_scan_duration_seconds"
SCANNER_UP = "mailguard_scanner_up"
VIRUS_HEADER = "X-MailGuard-Virus-Scan"
VIRUS_FACT = "virus"  # tx.facts: the virus found (the QUEUE stage warns about it)
TEMP_CLAMD = Reply(451, "virus scanner unavailable, try again later", "4.3.0")
TEMP_TOO_LARGE = Reply(451, "message too large for the virus scanner, try again later", "4.3.0")
PERM_TOO_LARGE = Reply(554, "message too large for the virus scanner", "5.3.4")


def declare_metrics(metrics: Metrics) -> None:
    metrics.declare(SCAN_METRIC, "counter", "content scans by scanner and result")
    metrics.declare(SCAN_SECONDS, "histogram", "content scan latency by scanner (errors too)")
    # several workers: 0 when any live worker's last scan failed
    metrics.declare(SCANNER_UP, "gauge", "1 when the scanner's last scan got an answer",
                    aggregate="livemin")


class ClamdCheck:
    """One clamd scan per message; the verdict is everybody's."""

    name = "clamd"
    stages = frozenset({Stage.QUEUE})
    error_reply = TEMP_CLAMD

    def __init__(self, client: ClamdClient, cfg: ClamdConfig, metrics: Metrics) -> None:
        self._client = client
        self._cfg = cfg
        self._metrics = metrics
        declare_metrics(metrics)

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        tx = session.transaction
        assert tx is not None
        started = session.clock.monotonic()
        try:
            result = await self._client.scan(tx.body)
        except (TemporaryError, PermanentError) as exc:
            self._metrics.observe(SCAN_SECONDS, session.clock.monotonic() - started,
                                  scanner="clamd")
            self._metrics.set(SCANNER_UP, 0.0, scanner="clamd")
            self._metrics.inc(SCAN_METRIC, scanner="clamd", result="error")
            # only seen when the policy lets the message go on (on_error = open)
            tx.queue_headers.append(header_line(VIRUS_HEADER, "unscanned (error)"))
            raise TemporaryError(str(exc)) from None
        self._metrics.observe(SCAN_SECONDS, session.clock.monotonic() - started, scanner="clamd")
        self._metrics.set(SCANNER_UP, 1.0, scanner="clamd")
        if isinstance(result, TooLarge):
            self._metrics.inc(SCAN_METRIC, scanner="clamd", result="too_large")
            why = f"too large for clamd ({result.size} > {result.limit} bytes)"
            log.warning("event=scan_too_large scanner=clamd size=%d limit=%d action=%s",
                        result.size, result.limit, self._cfg.on_too_large)
            if self._cfg.on_too_large == "tempfail":
                return tempfail(TEMP_TOO_LARGE, why)
            if self._cfg.on_too_large == "reject":
                return reject(PERM_TOO_LARGE, why)
            tx.queue_headers.append(header_line(VIRUS_HEADER, "skipped (size)"))
            return Verdict(Action.CONTINUE, reason=why, outcome=Outcome.SKIP)
        if isinstance(result, Infected):
            self._metrics.inc(SCAN_METRIC, scanner="clamd", result="infected")
            name = sanitise(result.name)[:100]
            log.warning("event=virus_found virus=%r from=<%s> rcpts=%s", name, tx.mail_from,
                        ",".join(tx.rcpts))
            tx.facts[VIRUS_FACT] = name
            return reject(Reply(554, f"message refused: virus {name} found", "5.7.1"),
                          f"virus {name} (clamd {result.server})")
        self._metrics.inc(SCAN_METRIC, scanner="clamd", result="clean")
        tx.queue_headers.append(header_line(VIRUS_HEADER, "clean"))
        return Verdict(Action.CONTINUE, reason=f"clean (clamd {result.server})")


def build_clamd(res: Resources, policy: CheckPolicy) -> tuple[ClamdCheck, CheckPolicy]:
    cfg = res.config.clamd
    client = ClamdClient(cfg.servers, connect_timeout_s=cfg.connect_timeout_s,
                         scan_timeout_s=cfg.scan_timeout_s, max_size_bytes=cfg.max_size_bytes)
    return ClamdCheck(client, cfg, res.metrics), policy
