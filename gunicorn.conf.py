"""How gunicorn serves flowcall; read automatically by `gunicorn wsgi:app` run from this directory.

Serving model: gevent workers, one per core, 1,000 connections each (chosen by measurement:
bench/README.md has the figures and `python -m bench` reproduces them). A flowcall call spends
nearly all its life waiting on a provider (seconds); greenlets hold 1,000 such waits per process
for a few kB each, where gthread needs an OS thread per waiting call and, in our runs, used at
most 1.2 of 2 cores (GIL and lock hand-offs between hundreds of threads) while gevent used all of
them for twice the throughput.

Every setting can be changed from the environment (or with gunicorn's own flags, which win):
    WEB_CONCURRENCY               worker processes (default: one per CPU core)
    FLOWCALL_WORKER_CLASS         gevent (default), gthread or sync
    FLOWCALL_WORKER_CONNECTIONS   gevent: concurrent requests per worker (default 1000)
    FLOWCALL_THREADS              gthread: threads per worker (default 500)
    HOST, PORT                    bind address (default 127.0.0.1:8000; 0.0.0.0:$PORT when only PORT
                                  is set, as platforms that set PORT expect and gunicorn does itself)
    FLOWCALL_TIMEOUT              worker silence (s) before the master restarts it (default 30)
    FLOWCALL_GRACEFUL_TIMEOUT     s a stopping worker gets to finish in-flight calls (default 70)
    FLOWCALL_KEEPALIVE            s an idle client connection is kept (default 5)
    FLOWCALL_ACCESS_LOG           set to 1 for gunicorn's access log on stdout (off by default:
                                  flowcall logs its own request line)
    FLOWCALL_CONTROL_SOCKET       path of gunicorn's control socket (off by default)

Correctness under gevent (the worker calls gevent.monkey.patch_all() after the fork, before it
imports the app; nothing here may import the app, requests or urllib3 into the master, and the app
is not preloaded, so every socket, lock and queue the app creates is cooperative):
  * requests adapter (urllib3 pool) per provider per process: urllib3's sockets and pool queue are patched, so a
    greenlet waiting on a provider yields.
  * The circuit breaker's threading.Lock is patched into a gevent lock; its critical sections never
    block, so it is never contended across a yield.
  * SQLAlchemy: the engine is created in create_app, in each worker after the fork (no
    preload_app), so no connection is ever shared between processes. psycopg 3 (>= 3.1.14) detects
    gevent and waits cooperatively; redis-py's sockets are patched. SQLite is a C library and does
    not yield: its queries are short, but a write waiting on another process's write lock blocks
    the whole worker for the busy-wait (up to tens of ms). That is the price of SQLite with several
    processes under any worker class (threads sleep there too); use PostgreSQL in production.
  * gunicorn's `timeout` here means "the event loop did not run for N s" (a CPU-bound or C-blocked
    greenlet), not "a request took N s": a 60 s provider call never trips it. (For sync workers it
    is per request; for gthread it is the main thread's heartbeat.)
"""
import importlib.util
import multiprocessing
import os
import sys


def _int(name, default):
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


worker_class = os.environ.get("FLOWCALL_WORKER_CLASS", "").strip() or "gevent"
if worker_class == "gevent" and importlib.util.find_spec("gevent") is None:
    print("gunicorn.conf.py: gevent is not installed (pip install -e .); serving with gthread instead",
          file=sys.stderr)
    worker_class = "gthread"

workers = _int("WEB_CONCURRENCY", multiprocessing.cpu_count())
worker_connections = _int("FLOWCALL_WORKER_CONNECTIONS", 1000)
# gunicorn turns a sync worker with threads > 1 into gthread: only gthread gets threads.
threads = _int("FLOWCALL_THREADS", 500) if worker_class == "gthread" else 1

_port = _int("PORT", 8000)
_host = os.environ.get("HOST", "").strip() or ("0.0.0.0" if os.environ.get("PORT") else "127.0.0.1")
bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]
backlog = 2048

timeout = _int("FLOWCALL_TIMEOUT", 30)
graceful_timeout = _int("FLOWCALL_GRACEFUL_TIMEOUT", 70)   # the default call deadline is 60 s
keepalive = _int("FLOWCALL_KEEPALIVE", 5)

accesslog = "-" if os.environ.get("FLOWCALL_ACCESS_LOG", "") not in ("", "0") else None
errorlog = "-"

# gunicorn refuses a header line over limit_request_field_size bytes itself (431), before flowcall
# sees it: room for a bearer token up to flowcall's own limit (app/tenancy/auth.py MAX_TOKEN_BYTES, 8 KiB)
# plus its header name, so an oversized token gets flowcall's own 401 rather than gunicorn's 431.
# The request line keeps gunicorn's 4,094-byte limit (414 past it); both answers are JSON (below).
limit_request_field_size = 16384
limit_request_line = 4094

preload_app = False            # each worker builds its own app, engine and sessions after the fork
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None   # heartbeat file off the disk

# gunicorn >= 25 opens a control socket at one fixed path per user, which several instances on a
# host (tests, a benchmark, two services) would fight over; opt in with a path of your own.
control_socket = os.environ.get("FLOWCALL_CONTROL_SOCKET", "").strip() or None
control_socket_disable = control_socket is None
if control_socket is None:
    del control_socket


def on_starting(server):
    """Metrics from every worker land in one directory that /metrics aggregates (prometheus-client
    multiprocess mode); it must be set before any worker imports prometheus_client, and emptied at
    each start so a restart does not resurrect old counts."""
    import glob
    import tempfile
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not directory:
        directory = tempfile.mkdtemp(prefix="flowcall-prometheus-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)


def when_ready(server):
    """The dashboard's roller (app/dashboard/roller.py) as a child of the master, started before the
    workers and told to them (FLOWCALL_DASHBOARD_ROLLER_RUNNING): it sums every tenant's completed
    hours and days every 5 minutes in its own process, so a dashboard page never reads a month of
    ledger rows in a worker that is serving calls. It stops with the master (and on its own if the
    master dies). FLOWCALL_DASHBOARD_ROLLER=0 turns it off (`flowcall worker` rolls too; set
    FLOWCALL_DASHBOARD_ROLLER_RUNNING=1 yourself when one runs beside this server)."""
    if os.environ.get("FLOWCALL_DASHBOARD_ROLLER", "").strip() == "0":
        return
    import subprocess
    server.flowcall_roller = subprocess.Popen([sys.executable, "-m", "app.dashboard.roller"],
                                              cwd=os.path.dirname(os.path.abspath(__file__)))
    os.environ["FLOWCALL_DASHBOARD_ROLLER_RUNNING"] = "1"


def on_exit(server):
    roller = getattr(server, "flowcall_roller", None)
    if roller is not None and roller.poll() is None:
        roller.terminate()
        try:
            roller.wait(10)
        except Exception:  # noqa: BLE001 - a roller stuck in a query is killed; it holds nothing to lose
            roller.kill()


# -- gunicorn's own error answers, as JSON ----------------------------------------------------------
# gunicorn answers some requests itself, before the app runs: a request line or header over its
# limits (414, 431), bad framing such as Content-Length with Transfer-Encoding or two
# Content-Lengths (400), an unsupported transfer coding (501), an app crash below WSGI (500). Every
# worker class renders these through gunicorn.util.write_error (workers/base.py handle_error), so
# replacing that one function here (in the master, inherited by every forked worker, whatever
# worker class `-k` picks) makes them our error envelope. The body is also OpenAI's error shape
# (`type`, `param` next to `code` and `message`), since the request may have been for /v1. Nothing
# the client sent is echoed: gunicorn's own message may quote a header line, which can hold a key.
_GUNICORN_ERRORS = {
    400: ("invalid_http_request", "The request is not valid HTTP/1.1 (malformed request line or header, or "
                                  "ambiguous framing such as Content-Length with Transfer-Encoding or two "
                                  "Content-Length headers)."),
    403: ("forbidden", "The request was refused by the HTTP server."),
    414: ("uri_too_long", "The request line is longer than 4,094 bytes."),
    417: ("expectation_failed", "Only 'Expect: 100-continue' is supported."),
    431: ("headers_too_large", "A request header is longer than 16,384 bytes, or there are more than 100 headers."),
    501: ("unsupported_transfer_coding", "Only the chunked transfer coding is supported."),
}


def _write_json_error(sock, status_int, reason, mesg):
    import json

    from gunicorn.util import write_nonblock
    code, message = _GUNICORN_ERRORS.get(status_int, ("internal_error", "Internal error."))
    body = json.dumps({"success": False, "request_id": None, "error": {
        "code": code, "message": message, "fields": {}, "provider": None, "retryable": False,
        "type": "server_error" if status_int >= 500 else "invalid_request_error", "param": None}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    write_nonblock(sock, head + body)


def _render_gunicorn_errors_as_json():
    import gunicorn.util
    gunicorn.util.write_error = _write_json_error


_render_gunicorn_errors_as_json()
