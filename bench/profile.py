"""Sampling profile of the gunicorn workers with py-spy, summarised into the request path's top costs.

py-spy attaches from outside (no code change, `--nonblocking` so the workers are never paused),
samples only the thread holding the GIL (`--gil`: where CPU goes, not where greenlets wait) and
writes collapsed stacks (`--format raw`): one line per distinct stack, `frame;frame;... count`.
`summarize` turns them into self time (the leaf frame: where the CPU actually went) and inclusive
time (any frame on the stack: what a call costs with everything under it), as shares of all samples,
and self time by layer (whose code the leaf frame is: the server, the web framework, the HTTP
client, the store, flowcall's own): what is left to cut, and who would have to change to cut it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def available() -> bool:
    return shutil.which("py-spy") is not None


def start(pid: int, duration_s: float, out_path: str, rate: int = 200) -> subprocess.Popen:
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--gil",
                             "--function", "--format", "raw", "--rate", str(rate),
                             "--duration", str(max(1, int(duration_s))), "--output", out_path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


# (layer, path fragments of its files), first match wins; C functions count in their Python caller
LAYERS = (
    ("server: gunicorn", ("gunicorn/",)),
    ("server: gevent, greenlet", ("gevent/", "greenlet/")),
    ("framework: flask, werkzeug, blinker", ("flask/", "werkzeug/", "blinker/")),
    ("HTTP client: requests, urllib3, http.client, email, urllib", ("requests/", "urllib3/", "http/client",
                                                                    "email/", "urllib/")),
    ("store: sqlalchemy", ("sqlalchemy/",)),
    ("validation: marshmallow", ("marshmallow/",)),
    ("JSON: json", ("json/",)),
    ("logs and metrics: logging, prometheus_client", ("logging/", "prometheus_client/")),
    ("flowcall: app/, nodes/", ("app/", "nodes/", "wsgi.py", "gunicorn.conf.py")),
)


def layer_of(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    path = m.group("file") if m else frame
    for name, fragments in LAYERS:
        if any(f in path for f in fragments):
            return name
    return "other packages" if "site-packages/" in path else "Python: the rest of the standard library"


def summarize(raw_path: str, top: int = 25) -> dict:
    self_t: Counter = Counter()
    layers: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            raw_frames = [fr for fr in stack.split(";") if "(" in fr]      # drops process/thread labels
            frames = [_short(fr) for fr in raw_frames]
            if not frames:
                continue
            total += n
            self_t[frames[-1]] += n
            layers[layer_of(raw_frames[-1])] += n
            for fr in set(frames):
                incl[fr] += n

    def table(counter):
        return [{"function": fn, "share": round(c / total, 4), "samples": c} for fn, c in counter.most_common(top)]
    return {"samples": total, "self": table(self_t), "inclusive": table(incl),
            "layers": [{"layer": name, "share": round(c / total, 4)} for name, c in layers.most_common()]}
