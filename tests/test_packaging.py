"""The deployment lock file stays in step with setup.cfg, pinned and hash-checked."""
from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[;\s]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_lock_pins_every_runtime_dependency_with_hashes():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    wanted = {_name(r) for r in cfg["options"]["install_requires"].split("\n") if r.strip()}
    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", lock, re.M))
    pinned = {k.lower().replace("_", "-"): v for k, v in pinned.items()}
    missing = wanted - set(pinned)
    assert not missing, f"regenerate requirements.lock (see its header): {missing} not pinned"
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", lock.split("\n\n", 1)[1])
    for block in blocks:
        if "==" in block:
            assert "--hash=sha256:" in block, block.splitlines()[0]
