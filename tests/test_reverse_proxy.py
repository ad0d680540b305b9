"""deploy/nginx-flowcall.conf, the README's answer to slow request bodies: behind it, clients that
send headers and then stall their body hold nginx connections, not gunicorn's, so /healthz and calls
still answer. Needs nginx (Debian: apt-get install nginx-light); skipped, saying so, without it."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
import requests

from conftest import migrated_db_url
from service import ROOT, e2e_service, free_port

pytestmark = pytest.mark.e2e
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
SLOW_CLIENTS = 30                  # more than the worker's connections below
WORKER_CONNECTIONS = 10


def _nginx_conf(tmp_path, listen_port: int, upstream: str) -> str:
    site = (ROOT / "deploy" / "nginx-flowcall.conf").read_text()
    site = site.replace("server 127.0.0.1:8000;", f"server {upstream};", 1)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen_port};", 1)
    assert f"listen 127.0.0.1:{listen_port};" in site and f"server {upstream};" in site
    (tmp_path / "flowcall.conf").write_text(site)
    temp = tmp_path / "nginx-temp"
    temp.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = tmp_path / "nginx.conf"
    main.write_text(f"""{user}daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {tmp_path}/flowcall.conf;
}}
""")
    return str(main)


def _wait_for(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError("nginx did not become ready")


def _stall(port: int) -> socket.socket:
    """Headers and the start of a body, then nothing: a slow or stalled upload."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /api/v3/llm/public/call HTTP/1.1\r\nHost: flowcall\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 4096\r\n\r\n{\"model\": \"mock.echo\", \"pro")
    return sock


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)")
def test_stalled_bodies_behind_nginx_do_not_starve_the_service(tmp_path):
    with e2e_service(tmp_path, workers=1, database_url=migrated_db_url(tmp_path),
                     extra_env={"FLOWCALL_WORKER_CONNECTIONS": str(WORKER_CONNECTIONS)}) as svc:
        port = free_port()
        conf = _nginx_conf(tmp_path, port, svc["url"].removeprefix("http://"))
        check = subprocess.run([NGINX, "-t", "-c", conf], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([NGINX, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stalled = []
        try:
            _wait_for(f"http://127.0.0.1:{port}/healthz", proc)
            stalled = [_stall(port) for _ in range(SLOW_CLIENTS)]
            health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            assert health.status_code == 200
            call = requests.post(f"http://127.0.0.1:{port}/api/v3/llm/public/call", timeout=10,
                                 json={"model": "mock.echo", "prompt": "still here"},
                                 headers={"X-Api-Key": svc["key"]})
            assert call.status_code == 200 and "still here" in call.json()["response"]
        finally:
            for sock in stalled:
                sock.close()
            proc.terminate()
            proc.wait(timeout=15)
            proc.stderr.close()
