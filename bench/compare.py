"""mailguard next to what bounds it, measured in the same run (issue 13's comparison).

Every server does the same work: one DNSBL lookup per connection at a local rbldnsd, a
greylist decision per recipient (the triplet passed already), the relay check, and a
qmail-queue run per message — the same tiny compiled stand-in for everyone (reads fd 0,
then fd 1, exits 0). Postfix's `smtp-source` sends MESSAGES messages of 5 KB in three
modes: A = one session, a new connection per message; B = 16 sessions, a new connection
per message; C = 16 sessions that keep their connection. Figures: messages per second
and the server's CPU per message (user + system, from /proc; a supervisor's workers
included). mailguard runs once per `--workers` value (`[server] workers`: 1 = the
daemon alone, 2 = a supervisor and two workers).

    python3 bench/compare.py [--messages 4000] [--modes A,B,C] [--workers 1,2]
                             [--only-mailguard]

Needs gcc, rbldnsd and postfix's smtp-source/smtp-sink (contrib/install-deps.sh --bench:
postfix is installed preseeded "No configuration" and never started).
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = "#include <unistd.h>\nint main(void){char b[65536];" \
    "while(read(0,b,sizeof b)>0);while(read(1,b,sizeof b)>0);return 0;}\n"
MODES = {"A": ["-s", "1"], "B": ["-s", "16"], "C": ["-s", "16", "-d"]}
SENDER, RCPT = "sender@sender.test", "user@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, its waited-for children and its live
    descendants (a supervisor's workers: their CPU counts before they are reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited meanwhile (a qmail-queue run): its parent counts it
        return 0.0
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK") + sum(cpu_s(c) for c in children(pid))


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return out


@contextmanager
def started(argv: list[str], port: int, what: str, **kw: object) -> Iterator[int]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **kw)  # type: ignore[call-overload]
    try:
        wait_port(port, proc, what)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def drive(port: int, mode: str, messages: int, pid: int) -> tuple[float, float, int]:
    """(msg/s, server CPU ms per message, smtp-source's exit status)."""
    before = cpu_s(pid)
    t = time.perf_counter()
    res = subprocess.run(["smtp-source", *MODES[mode], "-m", str(messages), "-l", "5120",
                          "-f", SENDER, "-t", RCPT, f"127.0.0.1:{port}"],
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    return messages / wall, (cpu_s(pid) - before) * 1000 / messages, res.returncode


def mailguard_config(tmp: Path, port: int, dns: str, qq: Path, workers: int) -> Path:
    cfg = tmp / f"mailguard-{workers}.toml"
    cfg.write_text(f"""
[server]
listen = ["127.0.0.1:{port}"]
hostname = "mx.test"
local_domains = ["example.com"]
max_connections_per_ip = 64
workers = {workers}
[delivery]
method = "qmail-queue"
qmail_queue = "{qq}"
[dns]
nameservers = ["{dns}"]
[[dnsbl.zones]]
zone = "bl.test"
[checks.greylist]
mode = "enforce"
[greylist]
key = "ip"
delay_s = 0
[control]
socket = "{tmp}/control.sock"
[log]
level = "warning"
""")
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--modes", default="A,B,C")
    ap.add_argument("--workers", default="1,2",
                    help="mailguard's [server] workers settings to compare (1 = no supervisor)")
    ap.add_argument("--only-mailguard", action="store_true",
                    help="skip smtp-sink and the bare aiosmtpd server")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w]
    modes = [m for m in args.modes.split(",") if m in MODES]
    for tool in ("gcc", "rbldnsd", "smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run contrib/install-deps.sh --bench")
    with tempfile.TemporaryDirectory(prefix="mgcompare") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)  # rbldnsd drops to its own user
        (tmp / "qq.c").write_text(STAND_IN)
        qq = tmp / "qq"
        subprocess.run(["gcc", "-O2", "-o", str(qq), str(tmp / "qq.c")], check=True)
        (tmp / "zones").mkdir()
        (tmp / "zones" / "bl.test").write_text("192.0.2.99\n")
        dns_port = free_port()
        user = ["-u", "rbldns"] if os.geteuid() == 0 else []
        rbl = subprocess.Popen(["rbldnsd", "-n", *user, "-b", f"127.0.0.1/{dns_port}",
                                "-w", str(tmp / "zones"), "bl.test:ip4set:bl.test"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dns = f"127.0.0.1:{dns_port}"
        python = sys.executable
        store = f"sqlite+aiosqlite:///{tmp}/mg.db"
        subprocess.run([python, "-m", "mailguard.cli.main", "db", "upgrade", "--store", store],
                       check=True, capture_output=True)
        systems: list[tuple[str, Callable[[int], list[str]]]] = [
            ("smtp-sink (protocol ceiling)", lambda p: [
                "smtp-sink", *(["-u", "nobody"] if os.geteuid() == 0 else []),
                f"127.0.0.1:{p}", "1000"]),
            ("bare aiosmtpd, same work (Python floor)",
             lambda p: [python, str(ROOT / "bench" / "_bare_server.py"), str(p), dns, str(qq),
                        str(tmp / "bare.db")]),
            *((f"mailguard serve, {n} worker{'s' if n > 1 else ''}",
               lambda p, n=n: [python, "-m", "mailguard.cli.main", "serve", "--config",
                               str(mailguard_config(tmp, p, dns, qq, n)), "--store", store])
              for n in workers),
        ]
        if args.only_mailguard:
            systems = [s for s in systems if s[0].startswith("mailguard")]
        print(f"{args.messages} messages of 5 KB per mode; msg/s (server CPU ms per message)")
        print(f"{'system':42}" + "".join(f"{m:>20}" for m in modes))
        try:
            for label, argv in systems:
                cells = []
                for mode in modes:
                    port = free_port()
                    with started(argv(port), port, label) as pid:
                        drive(port, mode, 50, pid)  # warm up (and pass the greylist)
                        rate, cpu, rc = drive(port, mode, args.messages, pid)
                    cells.append(f"{rate:8.0f} ({cpu:5.2f})" + ("" if rc == 0 else " FAIL"))
                print(f"{label:42}" + "".join(f"{c:>20}" for c in cells), flush=True)
        finally:
            rbl.terminate()
            rbl.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
