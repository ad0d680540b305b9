"""Logging: one line per event to stdout, where gunicorn and platforms expect it."""
from __future__ import annotations

import logging
import sys


def init(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_flowcall", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler._flowcall = True
        root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
