"""The `flowcall` command: run the service for development and manage API keys."""
from __future__ import annotations

import argparse
import sys
import uuid

from .config import Settings
from .store import Store


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


def _store() -> Store:
    return Store(Settings.from_env().database_url)


def cmd_serve(args) -> int:
    from . import create_app
    create_app().run(host=args.host, port=args.port, threaded=True)
    return 0


def cmd_keys_create(args) -> int:
    tenant = args.tenant or str(uuid.uuid4())
    key, plain = _store().create_key(tenant, args.agent, args.name)
    print(f"key id:  {key.id}", file=sys.stderr)
    print(f"tenant:  {key.tenant_id}" + ("  (new)" if not args.tenant else ""), file=sys.stderr)
    if key.agent_id:
        print(f"agent:   {key.agent_id}", file=sys.stderr)
    print("Store this key now: it is shown only once.", file=sys.stderr)
    print(plain)
    return 0


def cmd_keys_list(args) -> int:
    keys = _store().list_keys(args.tenant)
    print(f"{'ID':<18}{'TENANT':<38}{'AGENT':<38}{'NAME':<20}{'CREATED':<22}STATE")
    for k in keys:
        print(f"{k.id:<18}{k.tenant_id:<38}{(k.agent_id or '-'):<38}{(k.name or '-')[:19]:<20}"
              f"{k.created_at:%Y-%m-%d %H:%M:%S}   {'revoked' if k.revoked else 'active'}")
    return 0


def cmd_keys_revoke(args) -> int:
    if _store().revoke_key(args.id):
        print(f"revoked {args.id}")
        return 0
    print(f"no key with id {args.id}", file=sys.stderr)
    return 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowcall", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (development server; use gunicorn in production)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key; the key is the last line of stdout")
    create.add_argument("--tenant", type=_uuid, help="tenant UUID (a new one is made when omitted)")
    create.add_argument("--agent", type=_uuid, help="restrict the key to one agent UUID")
    create.add_argument("--name", help="a label for the key")
    create.set_defaults(func=cmd_keys_create)
    lst = keys.add_parser("list", help="list keys (never the secrets)")
    lst.add_argument("--tenant", type=_uuid)
    lst.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_keys_revoke)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
