"""`mailguard` command line. Subcommands import their machinery lazily: `mailguard smtpd`
and `mailguard queue` (started per connection / message) must stay lean.

Exit status: 0 success, 1 runtime failure, 2 usage or configuration error."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailguard import __version__, registry

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]

# Command groups living in their own modules: each has `register(subparsers)` and must be
# cheap to import (argparse only; its handlers import their machinery when run).
GROUPS = [
    "mailguard.cli.db",
    "mailguard.cli.domain",
    "mailguard.cli.spampref",
    "mailguard.cli.user",
    "mailguard.cli.override",
    "mailguard.cli.greylist",
    "mailguard.cli.account",
    "mailguard.cli.log",
    "mailguard.cli.qmail_watch",
    "mailguard.cli.quarantine",
    "mailguard.cli.role",
    "mailguard.cli.web",
]


def _config_path(args: argparse.Namespace) -> str | None:
    """--config, else $MAILGUARD_CONFIG, else the default file when it exists."""
    from mailguard.config import DEFAULT_CONFIG_PATH  # noqa: PLC0415

    if args.config:
        return str(args.config)
    env = os.environ.get("MAILGUARD_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG_PATH if Path(DEFAULT_CONFIG_PATH).exists() else None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Everyday flags: each one given replaces the config file's value."""
    server: dict[str, Any] = {}
    out: dict[str, Any] = {}
    if getattr(args, "listen", None):
        server["listen"] = list(args.listen)
    if getattr(args, "domain", None):
        server["local_domains"] = list(args.domain)
    if getattr(args, "relay_network", None):
        server["relay_networks"] = list(args.relay_network)
    if getattr(args, "hostname", None):
        server["hostname"] = args.hostname
    if server:
        out["server"] = server
    for spec in registry.DELIVERIES:  # one flag per delivery method
        value = getattr(args, spec.setting, None)
        if value:
            out["delivery"] = {"method": spec.name, spec.setting: str(value)}
    if getattr(args, "store", None):
        out["store"] = {"url": args.store}
    if getattr(args, "log_level", None):
        out["log"] = {"level": args.log_level}
    return out


def load_config(args: argparse.Namespace) -> Any:
    """The validated Config, or exit 2 with the file, key and reason on stderr."""
    from mailguard.config import load  # noqa: PLC0415
    from mailguard.errors import ConfigError  # noqa: PLC0415

    try:
        return load(_config_path(args), _overrides(args))
    except ConfigError as exc:
        print(f"mailguard: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from mailguard.app import run_daemon  # noqa: PLC0415
    from mailguard.errors import ConfigError, MailguardError  # noqa: PLC0415
    from mailguard.logsetup import setup_logging  # noqa: PLC0415
    from mailguard.workers import supervise, worker_count  # noqa: PLC0415

    config = load_config(args)
    setup_logging(config.log.level, config.log.format)
    path, overrides = _config_path(args), _overrides(args)

    def reload_config() -> Any:  # SIGHUP, a changed control file: the same sources again
        from mailguard.config import load  # noqa: PLC0415

        return load(path, overrides)

    def guarded(run: Callable[[], int]) -> int:
        try:
            return run()
        except ConfigError as exc:  # found at start-up, e.g. a certificate that does not load
            print(f"mailguard: configuration error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except MailguardError as exc:
            print(f"mailguard: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        except OSError as exc:
            print(f"mailguard: cannot start: {exc}", file=sys.stderr)
            return EXIT_FAILURE

    def run_worker(cfg: Any, worker: Any) -> int:  # in a worker process of the supervisor
        return guarded(lambda: asyncio.run(run_daemon(cfg, reload_config=reload_config,
                                                      worker=worker)))

    workers = worker_count(config.server.workers, os.cpu_count())
    if workers == 1:  # the daemon alone, no supervisor
        return guarded(lambda: asyncio.run(run_daemon(config, reload_config=reload_config)))
    return guarded(lambda: supervise(config, workers, run_worker, reload_config=reload_config))


def _cmd_config_check(args: argparse.Namespace) -> int:
    from mailguard.config import to_toml  # noqa: PLC0415

    config = load_config(args)
    sys.stdout.write(to_toml(config))
    print(f"# configuration OK ({config.source})", file=sys.stderr)
    return EXIT_OK


def add_common(p: argparse.ArgumentParser) -> None:
    """--config and --store, which every subcommand understands."""
    p.add_argument(
        "--config", "-c", metavar="FILE",
        help="TOML configuration file (default: $MAILGUARD_CONFIG, else "
        "/etc/mailguard/mailguard.toml when it exists, else built-in defaults)",
    )
    p.add_argument("--store", metavar="URL",
                   help="database URL (sqlite+aiosqlite:///FILE or postgresql://...)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailguard",
        description="qmail-compatible mail filtering pipeline",
    )
    parser.add_argument("--version", action="version", version=f"mailguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the SMTP daemon",
                           description="Run the SMTP daemon until SIGTERM.")
    add_common(serve)
    serve.add_argument("--listen", action="append", metavar="HOST:PORT",
                       help="address to listen on, repeatable ([::1]:25 for IPv6)")
    serve.add_argument("--domain", action="append", metavar="DOMAIN",
                       help="local domain to accept mail for (rcpthosts), repeatable; "
                       "a leading '.' matches subdomains")
    serve.add_argument("--relay-network", action="append", metavar="CIDR",
                       help="client network allowed to relay, repeatable")
    serve.add_argument("--hostname", metavar="NAME", help="this host's name (qmail 'me')")
    target = serve.add_mutually_exclusive_group()
    for spec in registry.DELIVERIES:
        target.add_argument(spec.flag, dest=spec.setting, metavar=spec.metavar, help=spec.about)
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_cmd_serve)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser(
        "check", help="validate the configuration and print the effective values",
        description="Validate the configuration (exit 2 on error) and print the effective "
        "values, with the qmail control files applied.")
    add_common(check)
    check.set_defaults(func=_cmd_config_check)

    for module in GROUPS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] in (["smtpd"], ["queue"]):  # per connection / message: no argparse
        lean = importlib.import_module(f"mailguard.lean.{words[0]}")
        if words[1:2] in (["-h"], ["--help"]):  # usage, never the control socket
            sys.stdout.write(f"usage: mailguard {words[0]}\n\n{lean.__doc__ or ''}")
            return EXIT_OK
        return int(lean.main())
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
