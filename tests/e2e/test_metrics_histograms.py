"""GET /metrics of a real daemon under load: the exposition parses with
prometheus_client's parser, and the latency histograms (checks, clamd scans, queue
hand-offs, SMTP transactions) and the open-connections gauge move with the mail sent."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import BASE_CONFIG
from tests.e2e.daemon_harness import Client, Daemon, body, codes, start_daemon

Connect = Callable[..., Client]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> tuple[bytes, Samples, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, text = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    samples: Samples = {}
    kinds: dict[str, str] = {}
    for family in text_string_to_metric_families(text.decode()):
        kinds[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return head, samples, kinds


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_histograms_move_under_load(tmp_path: Path, make_daemon: list[Daemon],
                                    connect: Connect, clamd_socket: str) -> None:
    toml = (BASE_CONFIG + '\n[metrics]\nlisten = "127.0.0.1:0"\n'
            f'\n[clamd]\nenabled = true\nservers = ["unix:{clamd_socket}"]\n')
    d = start_daemon(tmp_path, toml)
    make_daemon.append(d)
    log = d.wait_log("event=metrics_listening")
    port = int(log.split("event=metrics_listening address=127.0.0.1:")[1].split()[0])
    head, before, kinds = scrape(port)
    assert b"text/plain; version=0.0.4" in head
    assert get(before, "mailguard_smtp_transaction_duration_seconds_count",
               outcome="accepted") == 0

    clients = [connect(d), connect(d)]
    for c in clients:
        assert c.reply().startswith(b"220 ")
    _, during, _ = scrape(port)
    assert get(during, "mailguard_connections_open") == 2
    sent = 0
    for i in range(6):
        c = clients[i % 2]
        assert codes(c.transaction("a@example.org", [f"u{i}@example.com"],
                                   body(f"load {i}")))[-1] == 250
        sent += 1
    for c in clients:
        c.cmd("QUIT")
    d.wait_log("u5@example.com")

    _, after, kinds = scrape(port)
    assert kinds["mailguard_check_duration_seconds"] == "histogram"
    assert kinds["mailguard_scan_duration_seconds"] == "histogram"
    assert kinds["mailguard_queue_handoff_seconds"] == "histogram"
    assert kinds["mailguard_smtp_transaction_duration_seconds"] == "histogram"
    assert kinds["mailguard_connections_open"] == "gauge"
    # sizes from the store (counted at most once a minute): nothing greylisted or held
    assert kinds["mailguard_greylist_triplets"] == kinds["mailguard_quarantine_held"] == "gauge"
    assert get(after, "mailguard_greylist_triplets", state="pending") == 0
    assert ("mailguard_quarantine_held", frozenset()) in after

    def moved(name: str, **labels: str) -> float:
        return get(after, f"{name}_count", **labels) - get(before, f"{name}_count", **labels)

    assert moved("mailguard_smtp_transaction_duration_seconds", outcome="accepted") == sent
    assert moved("mailguard_scan_duration_seconds", scanner="clamd") == sent
    assert get(after, "mailguard_scanner_up", scanner="clamd") == 1
    assert moved("mailguard_queue_handoff_seconds", method="maildir") == sent
    assert moved("mailguard_check_duration_seconds", check="relay") == sent  # one RCPT each
    assert get(after, "mailguard_queue_handoffs_total", method="maildir",
               result="accepted") == sent
    # the +Inf bucket is the count, the buckets never go down, the time is not zero
    name = "mailguard_scan_duration_seconds"
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                     if k[0] == f"{name}_bucket" and ("scanner", "clamd") in k[1])
    assert buckets[-1] == (float("inf"), sent)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))
    assert get(after, f"{name}_sum", scanner="clamd") > 0
    deadline = time.monotonic() + 5  # the sessions end just after their 221
    while get(scrape(port)[1], "mailguard_connections_open") != 0:
        assert time.monotonic() < deadline, "connections_open stays above 0"
        time.sleep(0.05)
