"""../shared/specs beside the checkout: the providers' specs and the recorded exchanges tests replay.

A checkout standing anywhere else (a clone in a temporary directory) has none of them: a test that
needs one skips, naming the file, instead of failing. CI runs with shared/ beside its clone, so
nothing skips there for this reason.
"""
from __future__ import annotations

from pathlib import Path

import pytest

SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs"
FIXTURES = SPECS / "fixtures"


def spec_file(relative: str | Path, base: Path = SPECS) -> Path:
    """`base / relative`, or a skip (of the test, or of the module when called at import) if absent."""
    path = base / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared/specs is not beside this checkout", allow_module_level=True)
    return path


def fixture_file(relative: str | Path) -> Path:
    """A recorded exchange under ../shared/specs/fixtures (see spec_file)."""
    return spec_file(relative, FIXTURES)
