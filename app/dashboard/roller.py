"""Keeping the dashboard's sums ahead of its pages: `Rollups.roll` every ROLL_EVERY_S, in a process
that serves no call, so the summing never spends a web worker's time (nor its other callers').

Two hosts run it: `flowcall worker` (a thread), and `gunicorn wsgi:app`, whose master starts
`python -m app.dashboard.roller` beside the workers (gunicorn.conf.py; FLOWCALL_DASHBOARD_ROLLER=0
turns that off). Several may roll at once: each hour and day is stored once
(app/dashboard/rollups.py); the others' work is wasted but harmless."""
from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

from app.dashboard.rollups import ROLL_EVERY_S, Rollups

log = logging.getLogger("flowcall.dashboard")
TICK_S = 5.0                    # how often a waiting roller checks that its parent is alive


def keep_rolled(engine, stop: threading.Event, every_s: float = ROLL_EVERY_S,
                alive: Callable[[], bool] = lambda: True) -> None:
    """Roll now, then every `every_s` until `stop` is set or `alive()` turns false; a failed round is
    logged and retried next time."""
    rollups = Rollups(engine)
    while alive():
        try:
            done = rollups.roll()
            if done["units_stored"]:
                log.info("dashboard rollups: %s hours or days stored for %s tenants", done["units_stored"],
                         done["tenants"])
        except Exception:  # noqa: BLE001 - the next round tries again
            log.exception("dashboard rollups failed")
        waited = 0.0
        while waited < every_s:
            if stop.wait(min(TICK_S, every_s - waited)) or not alive():
                return
            waited += TICK_S


def start(engine, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=keep_rolled, args=(engine, stop), daemon=True, name="flowcall-rollups")
    thread.start()
    return thread


def main() -> int:
    """gunicorn's roller: until SIGTERM/SIGINT, or until its parent (the master) is gone."""
    from app.config import Settings
    from app.telemetry import logs
    from app.tenancy.db import make_engine

    settings = Settings.from_env()
    logs.init(settings.log_level or "INFO")
    parent = os.getppid()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    engine = make_engine(settings.database_url)
    try:
        keep_rolled(engine, stop, alive=lambda: os.getppid() == parent)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
