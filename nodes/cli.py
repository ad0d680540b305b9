"""The installed `flowcall` command: the core's commands (app/cli.py) plus `flowcall serve`, which
runs the web layer and so cannot live in app/ (the core never imports nodes)."""
from __future__ import annotations

import argparse
import sys

from app import cli
from app.services import build_services

from . import create_app


def cmd_serve(args) -> int:
    create_app(services=build_services(args.settings)).run(host=args.host, port=args.port, threaded=True)
    return 0


def _register_serve(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the service (development server; use gunicorn in production)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, extra_commands=(_register_serve,))


if __name__ == "__main__":
    sys.exit(main())
