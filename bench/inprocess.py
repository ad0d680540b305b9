"""CPU per call in one process, without gunicorn or a load generator: `python -m bench.inprocess [N]`.

Flask's test client sends `POST /api/v3/llm/public/call` to `openai.gpt-4o` through the whole app
(auth, validation, gateway, dispatch, the real HTTP transport to the benchmark's fake provider in a
subprocess, ledger row on SQLite). The figure is this process's CPU time (all its threads) per call,
the best of three rounds of N: steadier than wall-clock figures on a shared machine, and a quick
before/after check for a change on the call path. It leaves out gunicorn's and gevent's share, so
`python -m bench` stays the figure of record.
"""
from __future__ import annotations

import sys
import time

from bench.callpath import client_and_key, start_fake


def main(n: int = 1000) -> None:
    fake, fake_url = start_fake()
    try:
        client, key = client_and_key(fake_url, "inprocess")
        body, headers = {"model": "openai.gpt-4o", "prompt": "hello"}, {"X-Api-Key": key}
        for _ in range(200):                                   # warm-up: imports, caches, connections
            answer = client.post("/api/v3/llm/public/call", json=body, headers=headers)
            assert answer.status_code == 200, answer.get_data(as_text=True)
        rounds = []
        for _ in range(3):
            started = time.process_time()
            for _ in range(n):
                client.post("/api/v3/llm/public/call", json=body, headers=headers)
            rounds.append((time.process_time() - started) / n * 1000)
        print(f"{min(rounds):.3f} ms CPU per call (best of 3 rounds of {n}; rounds: "
              f"{', '.join(f'{r:.3f}' for r in rounds)})")
    finally:
        fake.kill()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
