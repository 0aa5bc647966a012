"""Where `mailguard serve` spends its time under bench/compare.py's load: a py-spy flame
graph of the daemon (all threads) while smtp-source drives it in one mode.

    python3 bench/profile.py [--mode B] [--messages 3000]   # -> bench/profiles/mailguard-B.svg

Needs py-spy (`pip install py-spy`) and what bench/compare.py needs."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(compare.MODES), default="B")
    ap.add_argument("--messages", type=int, default=3000)
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    out = Path(__file__).resolve().parent / "profiles" / f"mailguard-{args.mode}.svg"
    with tempfile.TemporaryDirectory(prefix="mgprofile") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        (tmp / "qq.c").write_text(compare.STAND_IN)
        qq = tmp / "qq"
        subprocess.run(["gcc", "-O2", "-o", str(qq), str(tmp / "qq.c")], check=True)
        (tmp / "zones").mkdir()
        (tmp / "zones" / "bl.test").write_text("192.0.2.99\n")
        dns_port = compare.free_port()
        user = ["-u", "rbldns"] if os.geteuid() == 0 else []
        rbl = subprocess.Popen(["rbldnsd", "-n", *user, "-b", f"127.0.0.1/{dns_port}", "-w",
                                str(tmp / "zones"), "bl.test:ip4set:bl.test"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        store = f"sqlite+aiosqlite:///{tmp}/mg.db"
        subprocess.run([sys.executable, "-m", "mailguard.cli.main", "db", "upgrade", "--store",
                        store], check=True, capture_output=True)
        port = compare.free_port()
        cfg = compare.mailguard_config(tmp, port, f"127.0.0.1:{dns_port}", qq, 1)
        argv = [sys.executable, "-m", "mailguard.cli.main", "serve", "--config", str(cfg),
                "--store", store]
        try:
            with compare.started(argv, port, "mailguard serve") as pid:
                compare.drive(port, args.mode, 50, (pid,))
                rec = subprocess.Popen([spy, "record", "-o", str(out), "-f", "flamegraph",
                                        "-r", "200", "--pid", str(pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
                rate, cpu, _ = compare.drive(port, args.mode, args.messages, (pid,))
                rec.send_signal(2)
                rec.wait(60)
        finally:
            rbl.terminate()
            rbl.wait(10)
    print(f"mode {args.mode}: {rate:.0f} msg/s, {cpu[0] / args.messages:.2f} ms CPU per message; "
          f"{out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
