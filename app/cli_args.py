"""Argument types shared by the `flowcall` commands."""
from __future__ import annotations

import argparse
import uuid


def uuid_arg(value: str) -> str:
    """A UUID in its canonical form; anything else is argparse's usage error."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None
