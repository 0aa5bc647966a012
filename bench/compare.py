"""mailguard next to what bounds it and next to Haraka, measured in the same run (issue 13).

Every server does the same work: one DNSBL lookup per connection at a local rbldnsd, a
greylist lookup per recipient (the triplet passed already), the relay check, and a
qmail-queue run per message — the same tiny compiled stand-in for everyone (reads fd 0,
then fd 1, checks the envelope's shape, counts the message, exits 0). Postfix's
`smtp-source` sends MESSAGES messages of 5 KB in three modes: A = one session, a new
connection per message; B = 16 sessions, a new connection per message; C = 16 sessions
that keep their connection. Figures: messages per second and the server's CPU per
message (user + system from /proc, its whole process tree: a supervisor's or cluster
master's workers and the qmail-queue runs included).

Rows: smtp-sink (the protocol ceiling), a bare aiosmtpd server doing the same work (the
Python floor, bench/_bare_server.py), mailguard once per --workers value ([server]
workers: 1 = the daemon alone, 2 = a supervisor and two workers), and Haraka once per
--haraka-nodes value (smtp.ini nodes: 0 = one process, N = a cluster master and N
workers) with dns-list (zone at the local rbldnsd), greylist (Redis: a redis-server of its
own on a loopback port, the triplet pre-seeded as passed; its CPU counts as Haraka's),
rcpt_to.in_host_list (relay check) and queue/qmail-queue at the same stand-in; the glue
plugin bench/haraka/bench_glue.js points node's DNS at rbldnsd, treats the loopback
client as remote (Haraka skips private IPs) and skips the core's rDNS lookup. Before its
first run each Haraka configuration is probed: a client at 127.0.0.2 (listed) is
refused, a foreign recipient is refused, an unseen client (127.0.0.3) is greylisted, a
message from 127.0.0.1 reaches the stand-in. After every run the stand-in's count (and
for Haraka the greylist record's lookup count) must equal the messages sent, or the cell
says so.

The drop-in rows (--only dropin; --dropin shim,module): ucspi-tcp's `tcpserver -v -c 64
-R -H -l 0 127.0.0.1 PORT program` runs, per connection, the drop-in for qmail-smtpd —
the qmail-hooks/qmail-smtpd shim (`python3 -I -S`) or `python3 -m mailguard.lean.smtpd`,
both with this Python — which hands the connection over the control socket
(MAILGUARD_CONTROL) to a `mailguard serve` with 1 worker and the mailguard row's
configuration (its own listener idle). Their CPU is tcpserver's process tree (the
drop-in processes: tcpserver reaps each, so their CPU is in its cutime/cstime; the run
waits until all are reaped) plus the daemon's; a second line splits it into the
drop-in side per connection and the daemon per message, next to the CPU of `python3 -c
pass` and `python3 -I -S -c pass` (this Python, median of 20 runs), printed once. Before
its first run each drop-in row is probed (a 220 greeting through tcpserver); after
every run tcpserver's log must show every drop-in process exiting 0 — one per message in
A and B. Last, mailguard's msg/s (its own listener and the drop-in) over the best Haraka
configuration's, per mode.

    bash contrib/install-deps.sh bench    # gcc, rbldnsd, postfix (never started),
                                          # redis-server (never started), Haraka 3.3.4
    .venv/bin/python bench/compare.py [--messages 4000] [--modes A,B,C] [--workers 1,2]
                                      [--haraka-nodes 0,2] [--dropin shim,module]
                                      [--only sink,bare,mailguard,dropin,haraka]

Haraka needs Node.js >= 20 (not installed by the script) and build/haraka/ (npm ci of
bench/haraka/, done by the script; --haraka DIR to use another): without them its rows
say "not installed" and how to install it; the drop-in rows need ucspi-tcp's tcpserver
(apt-get install ucspi-tcp). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import smtplib
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The qmail-queue stand-in. Built with -DCOUNT_FILE="..." it checks the envelope's shape
# (F...\0 ... \0\0, else exit 91 like qmail-queue) and appends one byte per message there.
STAND_IN = r"""#include <fcntl.h>
#include <unistd.h>
int main(void){char b[65536];ssize_t n;
while(read(0,b,sizeof b)>0);
#ifdef COUNT_FILE
char first=0,l1=1,l2=1;size_t total=0;
while((n=read(1,b,sizeof b))>0){if(!total)first=b[0];
 if(n>=2){l2=b[n-2];l1=b[n-1];}else{l2=l1;l1=b[0];}total+=(size_t)n;}
if(first!='F'||l1||l2)return 91;
int f=open(COUNT_FILE,O_WRONLY|O_APPEND|O_CREAT,0644);
if(f<0||write(f,".",1)!=1)return 71;
close(f);
#else
while((n=read(1,b,sizeof b))>0);
#endif
return 0;}
"""
MODES = {"A": ["-s", "1"], "B": ["-s", "16"], "C": ["-s", "16", "-d"]}
SENDER, RCPT = "sender@sender.test", "user@example.com"
LISTED_IP, UNSEEN_IP = "127.0.0.2", "127.0.0.3"  # probe clients (loopback: 127/8)
GREYLIST_DB = "11"


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
    proc = subprocess.Popen(argv, stdout=kw.pop("stdout", subprocess.DEVNULL),
                            stderr=kw.pop("stderr", subprocess.DEVNULL),
                            **kw)  # type: ignore[call-overload]
    try:
        wait_port(port, proc, what)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def drive(port: int, mode: str, messages: int, pids: tuple[int, ...],
          settle: Callable[[], None] = lambda: None) -> tuple[float, list[float], int]:
    """(msg/s, CPU ms of each of `pids` (with its tree) during the run, smtp-source's exit
    status). `pids`: the server, then more processes whose CPU counts as the server's
    (Haraka's redis-server, the drop-in's daemon). `settle` runs before each CPU reading
    (the drop-in: until tcpserver has reaped every drop-in process)."""
    settle()
    before = [cpu_s(p) for p in pids]
    t = time.perf_counter()
    res = subprocess.run(["smtp-source", *MODES[mode], "-m", str(messages), "-l", "5120",
                          "-f", SENDER, "-t", RCPT, f"127.0.0.1:{port}"],
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    settle()
    after = [cpu_s(p) for p in pids]
    return messages / wall, [(a - b) * 1000 for a, b in zip(after, before, strict=True)], \
        res.returncode


def startup_cpu_ms(argv: list[str], runs: int = 20) -> float:
    """Median user + system CPU ms of `argv` run to its end (its own rusage)."""
    samples = []
    for _ in range(runs):
        pid = os.posix_spawn(argv[0], argv, os.environ)
        _, _, usage = os.wait4(pid, 0)
        samples.append((usage.ru_utime + usage.ru_stime) * 1000)
    return statistics.median(samples)


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


# --- Haraka ------------------------------------------------------------------------------

HARAKA_INSTALL = "bash contrib/install-deps.sh bench"


def haraka_missing(haraka: Path) -> str | None:
    """Why Haraka cannot run here (None: it can)."""
    node = shutil.which("node")
    if node is None:
        return "node not found (Node.js >= 20 and npm, then: " + HARAKA_INSTALL + ")"
    major = subprocess.run([node, "-p", "process.versions.node.split('.')[0]"],
                           capture_output=True, text=True, check=False).stdout.strip()
    if not major.isdigit() or int(major) < 20:
        return f"Node.js {major or '?'} is older than 20"
    if not (haraka / "node_modules" / "Haraka" / "bin" / "haraka").exists():
        return f"no Haraka in {haraka} (run: {HARAKA_INSTALL})"
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return f"redis-server/redis-cli not found (run: {HARAKA_INSTALL})"
    return None


def haraka_version(haraka: Path) -> str:
    pkg = haraka / "node_modules" / "Haraka" / "package.json"
    return str(json.loads(pkg.read_text())["version"])


class Redis:
    """Haraka's greylist store: a redis-server of our own on a loopback port, no disk."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "redis-server")

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), "-n", GREYLIST_DB, *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    def seed_passed(self, ip: str) -> None:
        """haraka-plugin-greylist's white record for `ip` (its host id without rDNS): the
        triplet has passed, so each recipient costs a lookup and the record's update."""
        now = str(int(time.time()))
        self.cli("HSET", f"white:{ip}", "first_connect", now, "whitelisted", now,
                 "updated", now, "lifetime", "3024000", "tried_when_greylisted", "2",
                 "tried", "0")

    def lookups(self, ip: str) -> int:
        return int(self.cli("HGET", f"white:{ip}", "tried") or 0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def haraka_config(haraka: Path, tmp: Path, port: int, nodes: int, *, qq: Path,
                  redis_port: int) -> Path:
    """A Haraka directory (config/, plugins/) for one configuration; smtp.ini per start."""
    home = tmp / f"haraka-{nodes}"
    cfg = home / "config"
    (home / "plugins").mkdir(parents=True, exist_ok=True)
    if not cfg.exists():  # Haraka's defaults (what `haraka -i` installs), then ours
        shutil.copytree(haraka / "node_modules" / "Haraka" / "config", cfg)
    shutil.copy(ROOT / "bench" / "haraka" / "bench_glue.js", home / "plugins")
    files = {
        "smtp.ini": f"listen=127.0.0.1:{port}\nnodes={nodes}\n",
        "log.ini": "[main]\nlevel=warn\ntimestamps=false\n",
        "me": "mx.test\n",
        "plugins": "bench_glue\ndns-list\nrcpt_to.in_host_list\ngreylist\n"
                   "queue/qmail-queue\n",
        "host_list": "example.com\n",
        "qmail-queue.path": f"{qq}\n",
        "dns-list.ini": "[main]\nzones=bl.test\nperiodic_checks=0\nsearch=first\n"
                        "[stats]\nenable=false\n[bl.test]\nipv6=false\n"
                        "[ips.backscatterer.org]\nenable=false\n"
                        "[list.dnswl.org]\nok_helo=false\nok_mail=false\n",
        "greylist.ini": f"[main]\ntext=Greylisted\n[redis]\nhost=127.0.0.1\n"
                        f"port={redis_port}\ndb={GREYLIST_DB}\n"
                        "[skip]\ndnswlorg=false\nmailspikewl=false\n"
                        "[period]\nblack=850\ngrey=90000\nwhite=3024000\n",
    }
    for name, text in files.items():
        (cfg / name).write_text(text)
    return home


def haraka_ready(pid: int, nodes: int) -> None:
    """A cluster master accepts before all its workers listen: wait for the workers."""
    if nodes == 0:
        return
    deadline = time.monotonic() + 30
    while len(children(pid)) < nodes and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)


def probe_haraka(port: int, count: Callable[[], int], redis: Redis) -> str:
    """Each piece of work, once: raises SystemExit when one is not done."""
    def fail(what: str) -> None:
        raise SystemExit(f"Haraka probe on port {port}: {what}")

    try:
        with smtplib.SMTP("127.0.0.1", port, source_address=(LISTED_IP, 0), timeout=10):
            fail(f"a client at {LISTED_IP} (listed in bl.test) was greeted")
    except smtplib.SMTPConnectError as e:
        err = e.smtp_error
        listed = f"{e.smtp_code} {err.decode(errors='replace') if isinstance(err, bytes) else err}"
        if e.smtp_code // 100 != 5 or "bl.test" not in listed:
            fail(f"unexpected answer to a listed client: {listed}")
    with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.1", 0), timeout=10) as s:
        s.ehlo("probe.test")
        s.mail(SENDER)
        relay = s.rcpt("user@elsewhere.test")
        if relay[0] // 100 != 5:
            fail(f"foreign recipient answered {relay}")
        lookups, queued = redis.lookups("127.0.0.1"), count()
        ok = s.rcpt(RCPT)
        if ok[0] != 250:
            fail(f"local recipient answered {ok}")
        data = s.data(b"Subject: probe\r\n\r\nprobe\r\n")
        if data[0] != 250 or count() != queued + 1:
            fail(f"DATA answered {data}, stand-in count {queued} -> {count()}")
        if redis.lookups("127.0.0.1") != lookups + 1:
            fail("the greylist record was not looked up for the recipient")
    with smtplib.SMTP("127.0.0.1", port, source_address=(UNSEEN_IP, 0), timeout=10) as s:
        s.ehlo("probe.test")
        s.mail(SENDER)
        grey = s.rcpt(RCPT)
        if grey[0] // 100 != 4:
            fail(f"an unseen client's recipient answered {grey}, not a greylist deferral")
    return (f"dns-list refused {LISTED_IP} ({listed.splitlines()[0][:60]}); relay "
            f"{relay[0]} for elsewhere.test; greylist {grey[0]} for unseen {UNSEEN_IP}, "
            f"one Redis lookup per recipient for 127.0.0.1; stand-in got the message")


# --- the table ---------------------------------------------------------------------------

@dataclass
class System:
    key: str  # for --only
    label: str
    argv: Callable[[int], list[str]] | None  # None: not available (see `missing`)
    missing: str = ""
    env: dict[str, str] | None = None
    also: Callable[[], tuple[int, ...]] = lambda: ()  # more PIDs whose CPU counts
    queues: bool = True  # hands messages to the stand-in (smtp-sink does not)
    ready: Callable[[int], None] = lambda pid: None
    probe: Callable[[int], str] | None = None  # once, before the first warm-up
    counters: dict[str, Callable[[], int]] = field(default_factory=dict)  # +1 per message
    log: Path | None = None
    # The drop-in: a daemon started first on a port of its own (its CPU counts; the split
    # line shows the server's tree per connection and the daemon's per message), ready
    # when backend_ready returns; settle(pid) before each CPU reading; sessions(): the
    # drop-in processes that exited 0 and those that did not, so far.
    backend: Callable[[int], list[str]] | None = None
    backend_ready: Callable[[], None] = lambda: None
    settle: Callable[[int], None] = lambda pid: None
    sessions: Callable[[], tuple[int, int]] | None = None


def mailguard_argv(tmp: Path, dns: str, qq: Path, store: str,
                   workers: int) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "mailguard.cli.main", "serve", "--config",
                str(mailguard_config(tmp, port, dns, qq, workers)), "--store", store]
    return argv


def haraka_label(version: str, nodes: int) -> str:
    return (f"Haraka {version}".rstrip() + ", "
            + ("one process" if nodes == 0 else f"{nodes} workers (nodes={nodes})"))


def haraka_system(haraka: Path, tmp: Path, nodes: int, *, qq: Path, dns: str, redis: Redis,
                  count: Callable[[], int]) -> System:
    node = shutil.which("node") or "node"
    bin_haraka = haraka / "node_modules" / "Haraka" / "bin" / "haraka"

    def argv(port: int) -> list[str]:
        home = haraka_config(haraka, tmp, port, nodes, qq=qq, redis_port=redis.port)
        return [node, str(bin_haraka), "-c", str(home)]

    return System("haraka", haraka_label(haraka_version(haraka), nodes), argv,
                  env={**os.environ, "MAILGUARD_BENCH_DNS": dns},
                  also=lambda: (redis.proc.pid,),
                  ready=lambda pid: haraka_ready(pid, nodes),
                  probe=lambda port: probe_haraka(port, count, redis),
                  counters={"greylist lookups": lambda: redis.lookups("127.0.0.1")},
                  log=tmp / f"haraka-{nodes}.log")


# --- the drop-in under tcpserver -----------------------------------------------------------

DROPIN = {  # --dropin name: (row label, the program tcpserver runs per connection)
    # qmail-hooks/qmail-smtpd execs the compiled shim when contrib/shim/build.sh built it
    "shim": ("drop-in, qmail-hooks/qmail-smtpd (compiled)"
             if os.access(ROOT / "qmail-hooks" / "bin" / "mailguard-smtpd", os.X_OK)
             else "drop-in, qmail-hooks/qmail-smtpd (Python -I -S)",
             [str(ROOT / "qmail-hooks" / "qmail-smtpd")]),
    "module": ("drop-in, python3 -m mailguard.lean.smtpd",
               [sys.executable, "-m", "mailguard.lean.smtpd"]),
}
TCPSERVER_END = re.compile(rb"^tcpserver: end \d+ status (\d+)$", re.MULTILINE)


def tcpserver_ends(log: Path) -> tuple[int, int]:
    """(drop-in processes that exited 0, those that did not), from tcpserver -v's log
    (its status is the raw wait status: 256 is exit 1, the drop-in's 421 path)."""
    ends = TCPSERVER_END.findall(log.read_bytes()) if log.exists() else []
    ok = ends.count(b"0")
    return ok, len(ends) - ok


def reaped(pid: int) -> None:
    """Wait (up to 30 s) until tcpserver has reaped every drop-in process: only then is
    all of their CPU in its cutime/cstime (one exiting between the reading of tcpserver's
    /proc/PID/stat and its own would be missed; a zombie is still listed as a child)."""
    deadline = time.monotonic() + 30
    while children(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def control_ready(path: Path) -> None:
    """The daemon binds its control socket after its SMTP listeners: wait for it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if stat.S_ISSOCK(path.stat().st_mode):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"the daemon made no control socket at {path}")


def probe_dropin(port: int) -> str:
    """A greeting through tcpserver and the drop-in: 220 only when the daemon took the
    connection (the drop-in's own answer otherwise is a 421)."""
    client = smtplib.SMTP(timeout=10)
    try:
        code, text = client.connect("127.0.0.1", port)  # (connect() alone takes any code)
        greeting = f"{code} {text.decode(errors='replace')}"
        if code != 220:
            raise SystemExit(f"drop-in probe on port {port}: greeting {greeting}")
        client.quit()
    except (smtplib.SMTPException, OSError) as e:
        raise SystemExit(f"drop-in probe on port {port}: {e}") from None
    finally:
        client.close()
    return f"greeting through tcpserver: {greeting}"


def dropin_system(variant: str, tmp: Path, dns: str, qq: Path, store: str) -> System:
    """tcpserver running the drop-in per connection, in front of `mailguard serve` with 1
    worker and the mailguard row's configuration (its [control] socket)."""
    label, program = DROPIN[variant]
    log = tmp / f"dropin-{variant}.log"
    control = tmp / "control.sock"  # mailguard_config's [control] socket
    daemon = mailguard_argv(tmp, dns, qq, store, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGUARD_", "TCP"))}
    env.update(MAILGUARD_CONTROL=str(control), MAILGUARD_PYTHON=sys.executable,
               MAILGUARD_LIB=str(ROOT))

    def backend(port: int) -> list[str]:
        control.unlink(missing_ok=True)  # control_ready must not find a stale one
        return daemon(port)

    return System("dropin", label, lambda port: [
                      "tcpserver", "-v", "-c", "64", "-R", "-H", "-l", "0", "127.0.0.1",
                      str(port), *program],
                  env=env, backend=backend, backend_ready=lambda: control_ready(control),
                  settle=reaped, probe=probe_dropin, sessions=lambda: tcpserver_ends(log),
                  log=log)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", "-n", type=int, default=4000,
                    help="messages per mode and system (default 4000; a warm-up of 50 "
                         "comes first)")
    ap.add_argument("--modes", default="A,B,C", help="of A, B, C (default all)")
    ap.add_argument("--workers", default="1,2",
                    help="mailguard's [server] workers settings to compare (1 = no "
                         "supervisor; default 1,2)")
    ap.add_argument("--haraka-nodes", default="0,2",
                    help="Haraka's smtp.ini nodes settings (0 = one process, N = a cluster "
                         "master and N workers; default 0,2)")
    ap.add_argument("--haraka", type=Path, default=ROOT / "build" / "haraka",
                    help="the npm prefix holding Haraka (default build/haraka)")
    ap.add_argument("--dropin", default="shim,module",
                    help="the drop-in programs under tcpserver: shim (qmail-hooks/"
                         "qmail-smtpd, python3 -I -S), module (python3 -m "
                         "mailguard.lean.smtpd); default both")
    ap.add_argument("--only", default="",
                    help="comma list of sink, bare, mailguard, dropin, haraka (default all)")
    ap.add_argument("--only-mailguard", action="store_true", help="same as --only mailguard")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w]
    nodes_list = [int(n) for n in args.haraka_nodes.split(",") if n]
    modes = [m for m in args.modes.split(",") if m in MODES]
    only = {"mailguard"} if args.only_mailguard else {k for k in args.only.split(",") if k}
    dropins = [v for v in args.dropin.split(",") if v]
    if unknown := [v for v in dropins if v not in DROPIN]:
        raise SystemExit(f"--dropin: unknown {', '.join(unknown)} (of {', '.join(DROPIN)})")
    want_dropin = not only or "dropin" in only
    for tool in ("gcc", "rbldnsd", "smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run {HARAKA_INSTALL}")
    want_haraka = not only or "haraka" in only
    haraka_why = haraka_missing(args.haraka) if want_haraka else None
    with tempfile.TemporaryDirectory(prefix="mgcompare") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)  # rbldnsd drops to its own user
        (tmp / "qq.c").write_text(STAND_IN)
        qq, counted = tmp / "qq", tmp / "queued"
        subprocess.run(["gcc", "-O2", f'-DCOUNT_FILE="{counted}"', "-o", str(qq),
                        str(tmp / "qq.c")], check=True)

        counted.touch(mode=0o666)  # whoever runs the stand-in can count
        os.chmod(counted, 0o666)

        def count() -> int:
            return counted.stat().st_size if counted.exists() else 0

        (tmp / "zones").mkdir()
        (tmp / "zones" / "bl.test").write_text(f"192.0.2.99\n{LISTED_IP}\n")
        dns_port = free_port()
        user = ["-u", "rbldns"] if os.geteuid() == 0 else []
        rbl = subprocess.Popen(["rbldnsd", "-n", *user, "-b", f"127.0.0.1/{dns_port}",
                                "-w", str(tmp / "zones"), "bl.test:ip4set:bl.test"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dns = f"127.0.0.1:{dns_port}"
        python = sys.executable
        store = f"sqlite+aiosqlite:///{tmp}/mg.db"
        redis: Redis | None = None
        try:
            if not only or "mailguard" in only or want_dropin:
                subprocess.run([python, "-m", "mailguard.cli.main", "db", "upgrade",
                                "--store", store], check=True, capture_output=True)
            systems = [
                System("sink", "smtp-sink (protocol ceiling)", lambda p: [
                    "smtp-sink", *(["-u", "nobody"] if os.geteuid() == 0 else []),
                    f"127.0.0.1:{p}", "1000"], queues=False),
                System("bare", "bare aiosmtpd, same work (Python floor)",
                       lambda p: [python, str(ROOT / "bench" / "_bare_server.py"), str(p), dns,
                                  str(qq), str(tmp / "bare.db")]),
                *(System("mailguard", f"mailguard serve, {n} worker{'s' if n > 1 else ''}",
                         mailguard_argv(tmp, dns, qq, store, n)) for n in workers),
            ]
            if want_dropin and shutil.which("tcpserver") is not None:
                systems += [dropin_system(v, tmp, dns, qq, store) for v in dropins]
            elif want_dropin:
                systems += [System("dropin", DROPIN[v][0], None, missing="not installed: "
                                   "tcpserver not found (apt-get install ucspi-tcp)")
                            for v in dropins]
            if want_haraka and haraka_why is None:
                redis = Redis(tmp)
                redis.seed_passed("127.0.0.1")
                for n in nodes_list:
                    systems.append(haraka_system(args.haraka, tmp, n, qq=qq, dns=dns,
                                                 redis=redis, count=count))
            elif want_haraka:
                systems += [System("haraka", haraka_label("", n), None,
                                   missing=f"not installed: {haraka_why}")
                            for n in nodes_list]
            if only:
                systems = [s for s in systems if s.key in only]
            run(systems, modes, args.messages, count)
        finally:
            if redis is not None:
                redis.stop()
            rbl.terminate()
            rbl.wait(10)
    return 0


def measure(system: System, mode: str, messages: int, count: Callable[[], int],
            *, notes: list[str], probe: bool) -> tuple[float | None, str, str]:
    """One cell: (msg/s, None when the server did not do the work; the cell's text; for
    the drop-in the split of its CPU, else "")."""
    port = free_port()
    out = open(system.log, "ab") if system.log else subprocess.DEVNULL  # noqa: SIM115
    try:
        assert system.argv is not None
        with ExitStack() as stack:
            daemon: tuple[int, ...] = ()
            if system.backend is not None:  # started first, stopped last
                backend_port = free_port()
                daemon = (stack.enter_context(started(
                    system.backend(backend_port), backend_port, f"{system.label}: daemon",
                    stdout=out, stderr=subprocess.STDOUT)),)
                system.backend_ready()
            pid = stack.enter_context(started(system.argv(port), port, system.label,
                                              env=system.env, stdout=out,
                                              stderr=subprocess.STDOUT))
            system.ready(pid)
            if probe and system.probe is not None:
                notes.append(f"{system.label}: {system.probe(port)}")
            pids = (pid, *daemon, *system.also())

            def settle() -> None:
                system.settle(pid)

            drive(port, mode, 50, pids, settle)  # warm up (and pass the greylist)
            before = {k: c() for k, c in system.counters.items()}
            queued = count()
            ends = system.sessions() if system.sessions is not None else (0, 0)
            rate, cpu, rc = drive(port, mode, messages, pids, settle)
            lost = [f"{k} {c() - before[k]}/{messages}" for k, c in system.counters.items()
                    if c() - before[k] != messages]
            if system.queues and count() - queued != messages:
                lost.insert(0, f"queued {count() - queued}/{messages}")
            served = failed = 0
            if system.sessions is not None:
                now = system.sessions()
                served, failed = now[0] - ends[0], now[1] - ends[1]
                if failed:
                    lost.append(f"{failed} drop-in processes did not exit 0 (see {system.log})")
                if mode != "C" and served != messages:
                    lost.append(f"drop-in sessions served {served}/{messages}")
    except SystemExit as e:
        tail = system.log.read_text(errors="replace").splitlines()[-8:] if system.log else []
        notes.append(f"{system.label}, mode {mode}: FAILED: {e}" +
                     "".join(f"\n    {line}" for line in tail))
        return None, "FAILED", ""
    finally:
        if out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
    cell = f"{rate:8.0f} ({sum(cpu) / messages:5.2f})"
    split = ""
    if system.backend is not None:
        connections = served + failed or messages
        split = f"{cpu[0] / connections:6.2f} + {cpu[1] / messages:5.2f}"
        if mode == "C":
            notes.append(f"{system.label}, mode C: {connections} connections, so "
                         f"{messages / connections:.0f} messages per drop-in process")
    if rc != 0:
        notes.append(f"{system.label}, mode {mode}: smtp-source exited {rc}")
    if lost:
        notes.append(f"{system.label}, mode {mode}: " + ", ".join(lost))
    return (rate, cell, split) if rc == 0 and not lost else (None, cell + " !", split)


def run(systems: list[System], modes: list[str], messages: int,
        count: Callable[[], int]) -> None:
    width = max([42, *(len(s.label) + 3 for s in systems)])
    if any(s.key == "dropin" and s.argv is not None for s in systems):
        python = [sys.executable, "-c", "pass"]
        print(f"per process, CPU ms (median of 20) of {sys.executable}: -c pass "
              f"{startup_cpu_ms(python):.1f}, -I -S -c pass "
              f"{startup_cpu_ms([python[0], '-I', '-S', *python[1:]]):.1f}")
    print(f"{messages} messages of 5 KB per mode; msg/s (server CPU ms per message); "
          "! = see the notes below")
    print(f"{'system':{width}}" + "".join(f"{m:>20}" for m in modes), flush=True)
    rates: dict[str, dict[str, float]] = {}
    ours: list[str] = []  # mailguard's rows (its own listener, the drop-in)
    notes: list[str] = []
    for system in systems:
        if system.argv is None:
            print(f"{system.label:{width}}  {system.missing}", flush=True)
            continue
        cells: list[str] = []
        splits: list[str] = []
        for mode in modes:
            if cells and cells[0] == "FAILED" and system.probe is not None:
                cells.append("-")  # its probe or its start failed: not measured
                splits.append("")
                continue
            rate, cell, split = measure(system, mode, messages, count, notes=notes,
                                        probe=not cells)
            cells.append(cell)
            splits.append(split)
            if rate is not None:
                rates.setdefault(system.label, {})[mode] = rate
                if system.key in ("mailguard", "dropin") and system.label not in ours:
                    ours.append(system.label)
        print(f"{system.label:{width}}" + "".join(f"{c:>20}" for c in cells), flush=True)
        if any(splits):
            print(f"{'  drop-in ms/conn + daemon ms/msg':{width}}"
                  + "".join(f"{c:>20}" for c in splits), flush=True)
    haraka = {m: max((r[m] for k, r in rates.items() if k.startswith("Haraka") and m in r),
                     default=0.0) for m in modes}
    if ours and any(haraka.values()):
        print("mailguard / best Haraka (target >= 1.5)")
        for k in ours:
            print(f"{'  ' + k:{width}}" + "".join(
                f"{rates[k][m] / haraka[m]:19.2f}x" if haraka[m] and m in rates[k]
                else f"{'-':>20}" for m in modes))
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    sys.exit(main())
