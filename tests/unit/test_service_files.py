"""The deployment files in contrib/: the systemd units and the daemontools scripts start
commands the real CLI accepts, keep their sandbox, and fit the example configuration."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mailguard.config import ServerConfig
from mailguard.store.engine import normalise_url, sqlite_path

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
SYSTEMD = CONTRIB / "systemd"
DAEMONTOOLS = CONTRIB / "daemontools" / "mailguard"
UNITS = ["mailguard.service", "mailguard-web.service"]
DROP_IN = SYSTEMD / "mailguard.service.d" / "qmail-queue.conf"

SANDBOX = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "RestrictNamespaces": "yes",
    "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service", "User": "mailguard",
    "StateDirectory": "mailguard", "Restart": "on-failure", "KillSignal": "SIGTERM",
}
# systemd.exec(5), NoNewPrivileges=: each of these turns it on for an unprivileged user,
# and a private mount namespace (the second set) mounts everything nosuid: either way a
# setuid qmail-queue would run as the mailguard user.
IMPLY_NNP = {"LockPersonality", "MemoryDenyWriteExecute", "PrivateDevices", "ProtectClock",
             "ProtectHostname", "ProtectKernelLogs", "ProtectKernelModules",
             "ProtectKernelTunables", "RestrictAddressFamilies", "RestrictNamespaces",
             "RestrictRealtime", "RestrictSUIDSGID", "SystemCallArchitectures",
             "SystemCallFilter", "SystemCallLog", "DynamicUser"}
MOUNT_NAMESPACE = {"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                   "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths",
                   "ProtectControlGroups", "ProtectKernelTunables", "ProtectKernelModules",
                   "ProtectKernelLogs", "PrivateMounts", "TemporaryFileSystem"}
OFF = {"", "no", "false"}


def service(path: Path) -> dict[str, str]:
    """The [Service] section (keys case-kept; a repeated key: its last value)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return dict(parser["Service"])


def mailguard_argv(command_line: str) -> list[str]:
    """The words after the mailguard program in a command line."""
    words = shlex.split(command_line)
    at = next(i for i, w in enumerate(words) if w.endswith("/bin/mailguard"))
    return words[at + 1:]


def help_text(subcommand: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mailguard.cli.main", subcommand, "--help"],
                          capture_output=True, text=True, check=True, timeout=60)
    return done.stdout


def assert_cli_accepts(argv: list[str]) -> None:
    subcommand, *rest = argv
    text = help_text(subcommand)
    flags = [w.split("=")[0] for w in rest if w.startswith("-")]
    assert flags, argv
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", text), f"{subcommand} {flag}"


@pytest.mark.parametrize(("unit", "subcommand"), [("mailguard.service", "serve"),
                                                  ("mailguard-web.service", "web")])
def test_units_start_commands_the_cli_knows(unit: str, subcommand: str) -> None:
    argv = mailguard_argv(service(SYSTEMD / unit)["ExecStart"])
    assert argv == [subcommand, "--config", "/etc/mailguard/mailguard.toml"]
    assert_cli_accepts(argv)


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_sandboxed(unit: str) -> None:
    keys = service(SYSTEMD / unit)
    for key, value in SANDBOX.items():
        assert keys.get(key) == value, (unit, key)
    writable = {p.lstrip("-") for p in keys["ReadWritePaths"].split()}
    assert "/var/lib/mailguard" in writable
    assert "/var/spool/mailguard" in writable  # a web release goes into the spool too


def test_daemon_unit_binds_port_25_and_stops_gracefully() -> None:
    keys = service(SYSTEMD / "mailguard.service")
    assert keys["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert keys["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert {p.lstrip("-") for p in keys["ReadWritePaths"].split()} == {
        "/var/lib/mailguard", "/var/spool/mailguard", "/run/mailguard"}
    assert keys["RuntimeDirectory"] == "mailguard"
    assert keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert keys["KillMode"] == "mixed"  # SIGTERM to the daemon only, not to qmail-queue
    example = tomllib.loads((CONTRIB / "mailguard.example.toml").read_text())
    grace = max(ServerConfig().shutdown_grace_s, example["server"]["shutdown_grace_s"])
    assert float(keys["TimeoutStopSec"]) > grace


def test_example_configuration_writes_only_where_the_unit_allows() -> None:
    writable = [Path(p.lstrip("-")) for p in
                service(SYSTEMD / "mailguard.service")["ReadWritePaths"].split()]
    example = tomllib.loads((CONTRIB / "mailguard.example.toml").read_text())
    store = sqlite_path(normalise_url(example["store"]["url"]))
    assert store is not None
    for path in (store, Path(example["delivery"]["spool"]),
                 Path(example["control"]["socket"])):
        assert any(path == w or w in path.parents for w in writable), path


def test_qmail_queue_drop_in_lifts_what_disables_setuid() -> None:
    unit = service(SYSTEMD / "mailguard.service")
    drop_in = service(DROP_IN)
    assert drop_in["NoNewPrivileges"] == "no"
    for key in (IMPLY_NNP | MOUNT_NAMESPACE) & unit.keys():
        assert drop_in.get(key) in OFF, key
    # what stays: the user, the one capability, restart and stop handling
    assert not {"User", "AmbientCapabilities", "KillMode", "TimeoutStopSec"} & drop_in.keys()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own parser: no unknown key, no bad value (it only warns, so we read its
    output). ExecStart must name an existing program: point it at this checkout's."""
    program = Path(sys.executable).with_name("mailguard")
    assert program.exists()
    (tmp_path / "mailguard.service.d").mkdir()
    for name in [*UNITS, "mailguard.service.d/qmail-queue.conf"]:
        text = (SYSTEMD / name).read_text().replace("/opt/mailguard/.venv/bin/mailguard",
                                                   str(program))
        (tmp_path / name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no",
                           *(str(tmp_path / u) for u in UNITS)],
                          capture_output=True, text=True, timeout=60, check=False)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if str(tmp_path) in line]
    assert ours == []
    assert done.returncode == 0, done.stderr


def test_daemontools_scripts() -> None:
    run, log = DAEMONTOOLS / "run", DAEMONTOOLS / "log" / "run"
    for script in (run, log):
        assert script.stat().st_mode & 0o111, f"{script} not executable"
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)
    text = run.read_text()
    # the exec line with its continuations
    start = text[text.index("exec setpriv"):].replace("\\\n", " ").splitlines()[0]
    words = shlex.split(start)
    assert "--reuid=$USER" in words and "--ambient-caps=-all,+net_bind_service" in words
    assert re.search(r"^USER=mailguard$", text, re.M)
    argv = mailguard_argv(start)
    assert argv == ["serve", "--config", "$CONFIG"]
    assert_cli_accepts(argv)
    assert "exec 2>&1" in text
    assert re.search(r"^exec setuidgid \S+ multilog t .*\./main$", log.read_text(), re.M)
