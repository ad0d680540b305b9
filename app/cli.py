"""The `flowcall` command: migrate the database, manage keys and tenants, read usage, check the model
catalog against the providers, run a batch file or the job worker (app/batch/command.py). `flowcall
serve` needs the web layer, so nodes/cli.py adds it (the installed `flowcall` is nodes.cli:main).

Settings are read once, in `main`, checked as the service checks them, and handed to each command
as `args.settings`."""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import uuid
from collections.abc import Callable, Iterable

from app import startup
from app.batch.command import register as register_batch_commands
from app.catalog import Catalog
from app.cli_args import uuid_arg
from app.config import Settings
from app.tenancy.db import NotMigrated, make_engine, revisions, upgrade
from app.tenancy.ledger import Ledger, default_range, parse_day
from app.models_check import WINDOW_DAYS, render_table, run
from app.dashboard.rollups import ROLL_DAYS, Rollups
from app.tenancy.purge import check_ledger_cutoff, purge_expired, purge_ledger
from app.tenancy.store import Limits, Store
from app.transport import Transport


def _store(args) -> Store:
    return Store(args.settings.database_url)


def _limits(args) -> Limits:
    return Limits(rpm=args.rpm, tpm=args.tpm, budget_usd=args.budget_usd)


def _fmt(value) -> str:
    return "-" if value is None else str(value)


def cmd_db_upgrade(args) -> int:
    engine = make_engine(args.settings.database_url)
    before, head = revisions(engine)
    upgrade(engine)
    print(f"database at {head}" + (f" (was {before or 'empty'})" if before != head else " (already current)"))
    engine.dispose()
    return 0


def cmd_db_current(args) -> int:
    engine = make_engine(args.settings.database_url)
    current, head = revisions(engine)
    print(f"current: {current or 'empty'}  head: {head}")
    engine.dispose()
    return 0 if current == head else 1


def cmd_db_purge(args) -> int:
    """Expired idempotency answers and old finished jobs; the ledger only when asked (for cron)."""
    settings = args.settings
    retention = settings.jobs.retention_days
    before = None
    if args.ledger_before:
        try:
            before = parse_day(args.ledger_before, None)
            check_ledger_cutoff(before)
        except ValueError as exc:
            print(f"--ledger-before: {exc}", file=sys.stderr)
            return 2
    store = Store(settings.database_url)          # refuses an unmigrated database
    try:
        counts = purge_expired(store.engine, retention)
        print(f"idempotency: {counts['idempotency']} expired answers deleted")
        print(f"jobs: {counts['jobs']} jobs finished over {retention} days ago deleted")
        if before is not None:
            if args.archive:
                with open(args.archive, "x", newline="", encoding="utf-8") as archive:
                    deleted = purge_ledger(store.engine, before, archive)
                print(f"ledger: {deleted} rows before {before:%Y-%m-%d} archived to {args.archive} and deleted")
            else:
                deleted = purge_ledger(store.engine, before)
                print(f"ledger: {deleted} rows before {before:%Y-%m-%d} deleted")
    finally:
        store.close()
    return 0


def cmd_db_rollup(args) -> int:
    """Store the dashboard's sums of every tenant's completed days and hours (what `flowcall worker`
    does every 5 minutes), for a deployment that runs no worker: from cron."""
    if not 1 <= args.days <= 366:
        print("--days must be between 1 and 366", file=sys.stderr)
        return 2
    store = Store(args.settings.database_url)     # refuses an unmigrated database
    try:
        done = Rollups(store.engine).roll(days=args.days)
    finally:
        store.close()
    print(f"dashboard rollups: {done['units_stored']} hours or days stored for {done['tenants']} tenants")
    return 0


def cmd_keys_create(args) -> int:
    tenant = args.tenant or str(uuid.uuid4())
    key, plain = _store(args).create_key(tenant, args.agent, args.name, _limits(args))
    print(f"key id:  {key.id}", file=sys.stderr)
    print(f"tenant:  {key.tenant_id}" + ("  (new)" if not args.tenant else ""), file=sys.stderr)
    if key.agent_id:
        print(f"agent:   {key.agent_id}", file=sys.stderr)
    print("Store this key now: it is shown only once.", file=sys.stderr)
    print(plain)
    return 0


def cmd_keys_list(args) -> int:
    keys = _store(args).list_keys(args.tenant)
    print(f"{'ID':<18}{'TENANT':<38}{'AGENT':<38}{'NAME':<20}{'CREATED':<21}{'RPM':>7}{'TPM':>9}{'BUDGET':>9}  STATE")
    for k in keys:
        lim = k.limits
        print(f"{k.id:<18}{k.tenant_id:<38}{(k.agent_id or '-'):<38}{(k.name or '-')[:19]:<20}"
              f"{k.created_at:%Y-%m-%d %H:%M:%S}  {_fmt(lim.rpm):>7}{_fmt(lim.tpm):>9}{_fmt(lim.budget_usd):>9}"
              f"  {'revoked' if k.revoked else 'active'}")
    return 0


def cmd_keys_set(args) -> int:
    if _store(args).set_key_limits(args.id, _limits(args)):
        print(f"limits of {args.id}: {_limits(args).as_dict()} (other processes see it within 5 s)")
        return 0
    print(f"no key with id {args.id}", file=sys.stderr)
    return 1


def cmd_tenants_set(args) -> int:
    _store(args).set_tenant_limits(args.tenant, _limits(args))
    print(f"limits of tenant {args.tenant}: {_limits(args).as_dict()}")
    return 0


def cmd_tenants_list(args) -> int:
    print(f"{'TENANT':<38}{'RPM':>7}{'TPM':>9}{'BUDGET':>9}")
    for tenant, lim in _store(args).list_tenants():
        print(f"{tenant:<38}{_fmt(lim.rpm):>7}{_fmt(lim.tpm):>9}{_fmt(lim.budget_usd):>9}")
    return 0


def cmd_usage(args) -> int:
    store = _store(args)
    first, last = default_range()
    start, end = parse_day(args.from_, first), parse_day(args.to, last)
    result = Ledger(store.engine).usage(args.tenant, start, end, args.group_by)
    rows = [{"group": r["group"], **{k: v for k, v in r.items() if k != "group"}} for r in result["groups"]]
    rows.append({"group": "TOTAL", **result["totals"]})
    columns = ["group", "calls", "errors", "input_tokens", "output_tokens", "total_tokens", "cost"]
    if args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return 0
    by = f", by {args.group_by}" if args.group_by else ""
    print(f"tenant {args.tenant}, {start:%Y-%m-%d} to {end:%Y-%m-%d}{by}")
    print(f"{'GROUP':<40}{'CALLS':>8}{'ERRORS':>8}{'IN':>12}{'OUT':>12}{'TOTAL':>12}{'COST USD':>14}")
    for r in rows:
        print(f"{str(r['group'])[:39]:<40}{r['calls']:>8}{r['errors']:>8}{r['input_tokens']:>12}"
              f"{r['output_tokens']:>12}{r['total_tokens']:>12}{r['cost']:>14.6f}")
    return 0


def cmd_keys_revoke(args) -> int:
    if _store(args).revoke_key(args.id):
        print(f"revoked {args.id}")
        return 0
    print(f"no key with id {args.id}", file=sys.stderr)
    return 1


def cmd_models_check(args) -> int:
    """Exit 0: the catalog matches every provider; 1: something to act on; 2: a list could not be read."""
    settings = args.settings
    catalog = Catalog.load(settings.models_file)
    today = dt.date.fromisoformat(args.today) if args.today else dt.datetime.now(dt.UTC).date()
    reports = run(settings, catalog, Transport(settings.http_pool_size), today, providers=args.provider or None)
    if args.json:
        print(json.dumps({"checked_on": today.isoformat(), "window_days": WINDOW_DAYS,
                          "providers": [r.as_dict() for r in reports]}, indent=2))
    else:
        print(render_table(reports) if reports else "no provider is configured: nothing to check")
    if any(r.error for r in reports):
        return 2
    return 1 if any(r.findings for r in reports) else 0


def _limit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpm", type=int, help="requests per minute (omit: unlimited)")
    p.add_argument("--tpm", type=int, help="tokens per minute (omit: unlimited)")
    p.add_argument("--budget-usd", type=float, help="monthly cost budget in USD (omit: unlimited)")


Commands = Callable[[argparse._SubParsersAction], None]     # adds subcommands to `flowcall`


def parser(extra_commands: Iterable[Commands] = ()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowcall", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply every pending migration").set_defaults(func=cmd_db_upgrade)
    db.add_parser("current", help="show the database's revision (exit 1 when behind)").set_defaults(func=cmd_db_current)
    purge = db.add_parser("purge", help="delete expired idempotency answers and old finished jobs (run it from cron)")
    purge.add_argument("--ledger-before", metavar="YYYY-MM-DD",
                       help="also delete ledger rows created before this date (at most the 1st of this month)")
    purge.add_argument("--archive", metavar="FILE.csv",
                       help="with --ledger-before: write those rows to this new CSV file first")
    purge.set_defaults(func=cmd_db_purge)
    rollup = db.add_parser("rollup", help="store the dashboard's sums of completed days and hours "
                                          "(flowcall worker does it every 5 min; else run it from cron)")
    rollup.add_argument("--days", type=int, default=ROLL_DAYS,
                        help=f"how many days back, today included (default {ROLL_DAYS})")
    rollup.set_defaults(func=cmd_db_rollup)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key; the key is the last line of stdout")
    create.add_argument("--tenant", type=uuid_arg, help="tenant UUID (a new one is made when omitted)")
    create.add_argument("--agent", type=uuid_arg, help="restrict the key to one agent UUID")
    create.add_argument("--name", help="a label for the key")
    _limit_options(create)
    create.set_defaults(func=cmd_keys_create)
    setk = keys.add_parser("set", help="replace a key's limits")
    setk.add_argument("id")
    _limit_options(setk)
    setk.set_defaults(func=cmd_keys_set)
    lst = keys.add_parser("list", help="list keys (never the secrets)")
    lst.add_argument("--tenant", type=uuid_arg)
    lst.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_keys_revoke)

    tenants = sub.add_parser("tenants", help="tenant limits").add_subparsers(dest="tenants_command", required=True)
    tset = tenants.add_parser("set", help="replace a tenant's limits")
    tset.add_argument("tenant", type=uuid_arg)
    _limit_options(tset)
    tset.set_defaults(func=cmd_tenants_set)
    tenants.add_parser("list", help="tenants with limits").set_defaults(func=cmd_tenants_list)

    usage = sub.add_parser("usage", help="a tenant's usage totals from the ledger")
    usage.add_argument("--tenant", type=uuid_arg, required=True)
    usage.add_argument("--from", dest="from_", help="YYYY-MM-DD (default: first of this month)")
    usage.add_argument("--to", help="YYYY-MM-DD, exclusive (default: tomorrow)")
    usage.add_argument("--group-by", choices=["model", "agent", "day", "provider", "key"])
    usage.add_argument("--csv", action="store_true", help="CSV instead of a table")
    usage.set_defaults(func=cmd_usage)

    models = sub.add_parser("models", help="the model catalog").add_subparsers(dest="models_command", required=True)
    check = models.add_parser("check", help="compare the catalog with each configured provider's model list "
                                            "(exit 1 when something needs attention, 2 when a list failed)")
    check.add_argument("--json", action="store_true", help="JSON instead of a table (for a cron job that alerts)")
    check.add_argument("--provider", action="append", help="check only this provider (repeatable)")
    check.add_argument("--today", help="YYYY-MM-DD to count shutdown dates from (default: today, UTC)")
    check.set_defaults(func=cmd_models_check)

    register_batch_commands(sub)            # flowcall batch, flowcall worker
    for register in extra_commands:
        register(sub)
    return p


def main(argv: list[str] | None = None, extra_commands: Iterable[Commands] = ()) -> int:
    args = parser(extra_commands).parse_args(argv)
    try:
        args.settings = Settings.load()
        startup.check(args.settings, Catalog.load(args.settings.models_file))   # as the service starts
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        print(f"flowcall: {exc.code}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except NotMigrated as exc:
        print(str(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
