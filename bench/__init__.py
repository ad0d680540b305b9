"""flowcall's performance benchmark: `python -m bench` (see bench/README.md).

fake_provider.py  fast asyncio fake of the OpenAI / Anthropic / Gemini APIs, with a set latency
loadgen.py        Python load generator (closed loop, open loop at a fixed rate, bursts)
wrk.py            the wrk backend for closed-loop phases, when Debian's wrk is installed
scenarios.py      what each scenario sends on the direct and the gateway path
service.py        starts the fake and gunicorn (with ./gunicorn.conf.py) for a run
procs.py          CPU and memory of process trees, from /proc
profile.py        py-spy sampling profile summarised into top costs
run.py            the command: every scenario, both paths, result JSON and one line per scenario
"""
