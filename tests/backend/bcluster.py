"""Helpers for ferry-backend integration tests: a real ferry-backend (and,
for the cluster tests, real ferry-gateway and ferry-target processes) on free
loopback ports, always started through the `procs` fixture so they are cleaned
up. Everything binds 127.0.0.0/8 only.
"""
import json
import os
import ssl
import subprocess
import time
import urllib.request

from ferrytest import binary, free_port, http, wait_port

TOKEN = "backend-test-token"


def poll(fn, timeout=20.0, interval=0.05, what="condition"):
    """Calls fn() until truthy; returns it, or raises TimeoutError."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last: {last!r})")


class Backend:
    def __init__(self, procs, tmpdir, name="backend", extra=(), db=None, port=None):
        self.procs, self.name, self.extra = procs, name, list(extra)
        self.port = port or free_port()
        self.db = db or os.path.join(str(tmpdir), f"{name}.db")
        self.proc = None
        self.scheme = "http"

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def argv(self, extra=()):
        return [binary("ferry-backend"), "--db", self.db, "--listen", f"127.0.0.1:{self.port}",
                "--token", TOKEN, "--log-level", "info", *self.extra, *extra]

    def start(self, extra=(), wait=True):
        self.proc = self.procs.start(self.name, self.argv(extra))
        if wait:
            poll(self._up, timeout=20, what="ferry-backend /healthz")
        return self

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"ferry-backend exited with {self.proc.returncode}: {self.log()[-2000:]}")
        try:
            return self.call("GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    def log(self):
        with open(self.proc.ferry_log, errors="replace") as f:
            return f.read()

    def call(self, method, path, body=None, token=TOKEN, timeout=30):
        return http(method, self.url + path, body, token=token, timeout=timeout)

    def compat(self, query, method="GET", token=TOKEN):
        return self.call(method, "/sys/iscsi?" + query, token=token)

    def kill(self):
        self.procs.stop(self.proc, sig=9)


def raw(method, url, data=b"", headers=None, timeout=10, context=None):
    """Sends raw bytes; returns (status, text)."""
    req = urllib.request.Request(url, data=data if method not in ("GET",) else None, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Gateway:
    def __init__(self, procs, data_dir, name, backend_url):
        self.procs, self.data_dir, self.name, self.backend_url = procs, data_dir, name, backend_url
        self.nbd_port = free_port()
        self.admin_port = free_port()
        self.proc = None

    @property
    def addr(self):
        return f"127.0.0.1:{self.nbd_port}"

    @property
    def admin(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self):
        self.proc = self.procs.start(self.name, [
            binary("ferry-gateway"), "--data-dir", self.data_dir, "--nbd-listen", self.addr,
            "--admin-listen", f"127.0.0.1:{self.admin_port}", "--token", TOKEN,
            "--backend", self.backend_url, "--heartbeat-ms", "300", "--log-level", "warn"])
        wait_port("127.0.0.1", self.admin_port, timeout=15)
        return self

    def volume(self, name):
        return http("GET", self.admin + f"/v1/volumes/{name}")


class Target:
    def __init__(self, procs, state_dir, name, ip, backend_url, demo_open=True, extra=()):
        self.procs, self.state_dir, self.name, self.ip = procs, state_dir, name, ip
        self.backend_url, self.demo_open, self.extra = backend_url, demo_open, list(extra)
        self.iscsi_port = free_port(ip)
        self.admin_port = free_port(ip)
        self.proc = None

    @property
    def portal(self):
        return f"{self.ip}:{self.iscsi_port}"

    @property
    def admin(self):
        return f"http://{self.ip}:{self.admin_port}"

    def start(self):
        os.makedirs(self.state_dir, exist_ok=True)
        self.proc = self.procs.start(self.name, [
            binary("ferry-target"), "--state-dir", self.state_dir, "--iscsi-listen", self.portal,
            "--admin-listen", f"{self.ip}:{self.admin_port}", "--token", TOKEN,
            "--backend", self.backend_url, "--heartbeat-ms", "300",
            *(["--demo-open"] if self.demo_open else []), *self.extra, "--log-level", "info"])
        wait_port(self.ip, self.admin_port, timeout=20)
        return self

    def status(self):
        st, body = http("GET", self.admin + "/v1/status")
        assert st == 200, body
        return {v["volumeName"]: v for v in body["volumes"]}

    def kill(self):
        self.procs.stop(self.proc, sig=9)
