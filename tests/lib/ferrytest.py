"""Shared helpers for Ferry's Python integration tests.

Promise: processes started through Procs are killed (SIGKILL after SIGTERM)
when the test ends, even on failure; ports come from the kernel (bind to
127.0.0.1:0), so tests can run beside a live cluster; nothing binds outside
127.0.0.0/8.
"""
import os
import signal
import socket
import subprocess
import time
import urllib.request
import json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(ROOT, "build"))
BIN = os.path.join(BUILD, "bin")


def binary(name):
    p = os.path.join(BIN, name)
    if not os.path.exists(p):
        raise RuntimeError(f"{p} not built (set FERRY_BUILD_DIR?)")
    return p


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


def http(method, url, body=None, token=None, timeout=10):
    """Returns (status, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("X-Ferry-Token", token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read().decode()
        status = e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


class Procs:
    """Starts daemons and always cleans them up. Use as a context manager or pytest fixture."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = []

    def start(self, name, argv, env=None):
        log = open(os.path.join(self.logdir, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        p.ferry_name = name
        p.ferry_log = os.path.join(self.logdir, f"{name}.log")
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=5):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, sig)
                p.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                p.kill()
                p.wait()

    def close(self):
        for p in reversed(self.procs):
            self.stop(p)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
