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


def _pins(lock_name: str) -> dict[str, str]:
    lock = (ROOT / lock_name).read_text()
    return {k.lower().replace("_", "-"): v for k, v in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", lock, re.M)}


def _requirements(section: str, key: str) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [r.strip() for r in cfg[section][key].split("\n") if r.strip()]


def test_test_lock_pins_every_dependency_within_setup_cfg_ranges_with_hashes():
    """The README's test command installs requirements-test.lock: every runtime and test dependency
    of setup.cfg is pinned there, inside the range setup.cfg allows, and hash-checked."""
    from packaging.requirements import Requirement

    pins = _pins("requirements-test.lock")
    wanted = _requirements("options", "install_requires") + _requirements("options.extras_require", "test")
    for line in wanted:
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"regenerate requirements-test.lock (see its header): {name} not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(req.specifier))
    lock = (ROOT / "requirements-test.lock").read_text()
    assert "--find-links" not in lock and "--index-url" not in lock     # nothing machine-specific
    for block in re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", lock.split("\n\n", 1)[-1]):
        if "==" in block:
            assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_two_locks_agree_on_every_shared_version():
    """Tests run against exactly the runtime versions that deployments install."""
    runtime, test = _pins("requirements.lock"), _pins("requirements-test.lock")
    differing = {name: (v, test.get(name)) for name, v in runtime.items() if test.get(name) != v}
    assert not differing, f"regenerate requirements-test.lock from requirements.lock: {differing}"


def test_readme_and_ci_install_from_the_locks():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "pip install -r requirements-test.lock && pip install --no-deps -e . && python -m pytest"
    assert command in readme
    assert "-r requirements-test.lock" in ci and "--no-deps -e ." in ci and "python3 -m pytest" in ci
    assert "pip install -r requirements.lock && pip install --no-deps -e ." in readme
