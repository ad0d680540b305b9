"""`flowcall batch INPUT -o OUTPUT` (a CSV or JSONL file through the same core as the service, in
this process: app/batch/runner.py) and `flowcall worker` (the job queue's consumers): their command
lines."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from app.batch.reader import UsageError
from app.batch.runner import EXIT_OK, EXIT_USAGE, dry_run, prepare, principal_of, run
from app.cli_args import uuid_arg
from app.config import Settings
from app.services import Services, build_services

MAX_CONCURRENCY = 64
BATCH_DESCRIPTION = """Run every row of INPUT as a call, in this process, through the same core as the service
(providers, retries, rate limits, budgets, the usage ledger), and write OUTPUT with the input columns
plus each row's result.

Resumable: rows already in OUTPUT are skipped, so rerunning the same command after a crash, a kill
or Ctrl-C calls only the rows left. The first Ctrl-C stops taking rows and waits for the calls in
flight; a second one quits at once. Exit status: 0 all rows succeeded, 1 some failed (0 with
--allow-failures), 2 a usage error (nothing called), 130 stopped before the end."""



def cmd_batch(args, services: Services | None = None, stderr=None) -> int:
    stderr = stderr or sys.stderr
    settings: Settings = args.settings
    try:
        if not 1 <= args.concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
        prepared = prepare(args, repair=not args.dry_run)
        if args.dry_run:
            return dry_run(prepared, settings, sys.stdout)
        services = services or build_services(replace(settings, log_level=settings.log_level or "WARNING"))
        principal = principal_of(args, settings, services.store)
    except UsageError as exc:
        print(f"flowcall batch: {exc}", file=stderr)
        return EXIT_USAGE
    return run(args, prepared, services, principal, stderr)


def cmd_worker(args) -> int:
    services = build_services(args.settings)
    jobs = services.jobs
    if jobs is None:
        print("flowcall worker: the job queue could not be opened (see the log above)", file=sys.stderr)
        return EXIT_USAGE
    where = "Redis" if jobs.settings.redis_url else jobs.settings.queue_path
    print(f"flowcall worker: queue {where}, {args.workers or jobs.settings.workers} threads", file=sys.stderr)
    jobs.work(args.workers)
    return EXIT_OK


def register(subparsers) -> None:
    """Add `batch` and `worker` to the `flowcall` command."""
    b = subparsers.add_parser(
        "batch", help="run every row of a CSV/JSONL file as a call (in-process; resumable)",
        description=BATCH_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("input", help="CSV (header line) or JSONL (one object a line)")
    b.add_argument("-o", "--output", required=True, help="CSV or JSONL; rows already in it are skipped")
    what = b.add_argument_group("what to send")
    what.add_argument("--prompt", metavar="TEMPLATE",
                      help='template with {column} placeholders, e.g. "Classify this ticket: {text}"')
    what.add_argument("--column", metavar="NAME", help="the column that holds the prompt (CSV default: prompt)")
    what.add_argument("--system", help="a system message for every row")
    what.add_argument("--model", help="model spec (default auto; for JSONL call bodies, a default)")
    what.add_argument("--task", help="context.task, the routing hint for auto")
    what.add_argument("--response-format", metavar="SCHEMA_JSON",
                      help="a JSON Schema file (strict structured output) or a response_format object")
    what.add_argument("--max-tokens", type=int, help="options.maxTokens")
    what.add_argument("--temperature", type=float, help="options.temperature")
    run = b.add_argument_group("how to run")
    run.add_argument("--concurrency", type=int, default=4, help="calls at once (default 4)")
    run.add_argument("--id-column", metavar="NAME",
                     help="column that identifies a row across runs (default: a hash of the row)")
    run.add_argument("--input-format", choices=["csv", "jsonl"], help="default: from INPUT's name")
    run.add_argument("--format", choices=["csv", "jsonl"], help="OUTPUT's format (default: from its name)")
    run.add_argument("--tenant", type=uuid_arg, help="tenant the calls are billed to (or use --key)")
    run.add_argument("--agent", type=uuid_arg, help="agent UUID for the ledger (with --tenant)")
    run.add_argument("--key", help="an API key: its tenant, limits and budget apply (default: $FLOWCALL_KEY)")
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even when rows failed")
    run.add_argument("--dry-run", action="store_true",
                     help="estimate tokens and cost from the catalog prices; call and write nothing")
    b.set_defaults(func=cmd_batch)

    w = subparsers.add_parser("worker", help="run the job queue's consumers (start it beside gunicorn)")
    w.add_argument("--workers", type=int, help="jobs at once (default FLOWCALL_JOB_WORKERS, 4)")
    w.set_defaults(func=cmd_worker)
