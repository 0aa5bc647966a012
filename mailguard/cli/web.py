"""`mailguard web`: serve the users' web page (docs/web.md). Runs until SIGTERM/SIGINT.

Exit status: 0 stopped, 1 runtime failure (store out of date or unreachable, port in
use), 2 usage or configuration error."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    web = sub.add_parser("web", help="serve the users' web page",
                         description="Serve the page where mail users log in with their "
                         "address and password and set their spam filtering ([web]).")
    add_common(web)
    web.add_argument("--listen", dest="web_listen", metavar="HOST:PORT",
                     help="instead of [web] listen")
    web.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from mailguard.cli.main import EXIT_USAGE, load_config  # noqa: PLC0415
    from mailguard.clock import SystemClock  # noqa: PLC0415
    from mailguard.logsetup import setup_logging  # noqa: PLC0415
    from mailguard.settings.base import parse_hostport  # noqa: PLC0415
    from mailguard.web.app import WebContext, build_app, templates  # noqa: PLC0415

    config = load_config(args)
    try:
        host, port = parse_hostport(args.web_listen or config.web.listen, 8025)
    except ValueError as exc:
        print(f"mailguard: --listen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.log.level, config.log.format)
    app = build_app(WebContext(config, SystemClock(), templates()))
    tls: dict[str, Any] = {}
    if config.web.tls_cert:
        tls = {"ssl_certfile": config.web.tls_cert,
               "ssl_keyfile": config.web.tls_key or config.web.tls_cert}
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False,
        proxy_headers=False, server_header=False, lifespan="on", **tls))
    server.run()
    return 0 if server.started else 1
