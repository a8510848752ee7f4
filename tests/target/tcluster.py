"""Helpers for the ferry-target integration tests: real ferry-gateway and
ferry-target processes on free loopback ports, started through the `procs`
fixture (always cleaned up), plus thin wrappers over their admin APIs and the
libiscsi / qemu tools.
"""
import json
import os
import signal
import subprocess
import time

from ferrytest import binary, free_port, http, wait_port

TOKEN = "test-token"
IQN_PREFIX = "iqn.2026-11.io.ferry.test"


def poll(fn, timeout=20.0, interval=0.05, what="condition"):
    """Calls fn() until it returns a truthy value; returns it, or raises after timeout."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last: {last!r})")


class Gateway:
    def __init__(self, procs, data_dir, name, nbd_port=None, admin_port=None):
        self.procs, self.data_dir, self.name = procs, data_dir, name
        self.nbd_port = nbd_port or free_port()
        self.admin_port = admin_port or free_port()
        self.proc = None

    @property
    def nbd(self):
        return f"127.0.0.1:{self.nbd_port}"

    @property
    def admin(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self):
        self.proc = self.procs.start(self.name, [
            binary("ferry-gateway"), "--data-dir", self.data_dir,
            "--nbd-listen", self.nbd, "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--token", TOKEN, "--log-level", "warn"])
        wait_port("127.0.0.1", self.admin_port, timeout=15)
        wait_port("127.0.0.1", self.nbd_port, timeout=15)
        return self

    def kill(self, sig=signal.SIGKILL):
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)

    def create_volume(self, name, size):
        st, body = http("POST", self.admin + "/v1/volumes", {"name": name, "size": size}, token=TOKEN)
        assert st in (200, 201), body
        return body

    def volume(self, name):
        st, body = http("GET", self.admin + f"/v1/volumes/{name}")
        assert st == 200, body
        return body

    def extend(self, name, size):
        st, body = http("POST", self.admin + f"/v1/volumes/{name}/extend", {"size": size}, token=TOKEN)
        assert st == 200, body
        return body


class Target:
    def __init__(self, procs, state_dir, name="target", ip="127.0.0.1"):
        self.procs, self.state_dir, self.name, self.ip = procs, state_dir, name, ip
        self.iscsi_port = free_port(ip)
        self.admin_port = free_port(ip)
        self.proc = None

    @property
    def portal(self):
        return f"{self.ip}:{self.iscsi_port}"

    @property
    def admin(self):
        return f"http://{self.ip}:{self.admin_port}"

    def argv(self, extra=()):
        return [binary("ferry-target"), "--state-dir", self.state_dir,
                "--iscsi-listen", self.portal, "--admin-listen", f"{self.ip}:{self.admin_port}",
                "--token", TOKEN, "--demo-open", "--log-level", "info", *extra]

    def start(self, extra=()):
        self.proc = self.procs.start(self.name, self.argv(extra))
        poll(lambda: self._healthy(), timeout=20, what="ferry-target /healthz")
        return self

    def _healthy(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"ferry-target exited with {self.proc.returncode}: " + self.log()[-2000:])
        try:
            st, body = http("GET", self.admin + "/healthz", timeout=2)
            return st == 200
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM):
        self.procs.stop(self.proc, sig=sig)

    def log(self):
        with open(self.proc.ferry_log, errors="replace") as f:
            return f.read()

    def call(self, method, path, body=None, token=TOKEN):
        return http(method, self.admin + path, body, token=token)

    def create_target(self, iqn, **kw):
        st, body = self.call("POST", "/v1/targets", {"iqn": iqn, **kw})
        assert st in (200, 201), body
        return body

    def add_lun(self, iqn, volume, gateways, **kw):
        st, body = self.call("POST", f"/v1/targets/{iqn}/luns",
                             {"volume": volume, "gateways": [g.nbd for g in gateways], **kw})
        assert st == 201, body
        return body

    def status(self, volume):
        st, body = self.call("GET", "/v1/status")
        assert st == 200, body
        rows = [r for r in body["volumes"] if r["volumeName"] == volume]
        return rows[0] if rows else None

    def set_timeout(self, kind, seconds):
        st, body = self.call("PUT", "/v1/timeouts", {"type": kind, "duration": seconds})
        assert st == 200, body

    def url(self, iqn, lun, auth=""):
        return f"iscsi://{auth}{self.portal}/{iqn}/{lun}"


def run(argv, timeout=60, check=True, input=None):
    p = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} failed ({p.returncode}): {p.stdout}\n{p.stderr}")
    return p


class Verifier:
    """Runs ferry-iscsi-verify in the background; phases driven through files."""

    def __init__(self, procs, tmp, url, name="verify", **kw):
        self.tmp = tmp
        self.ready = os.path.join(tmp, f"{name}.ready")
        self.stopf = os.path.join(tmp, f"{name}.stop")
        self.verifyf = os.path.join(tmp, f"{name}.verify")
        self.out = os.path.join(tmp, f"{name}.out")
        args = [binary("ferry-iscsi-verify"), "--url", url, "--ready-file", self.ready,
                "--stop-file", self.stopf, "--seconds", str(kw.pop("seconds", 600))]
        if kw.pop("hold_verify", False):
            args += ["--verify-file", self.verifyf]
        for k, v in kw.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        self.outf = open(self.out, "w")
        self.errpath = os.path.join(tmp, f"{name}.err")
        self.errf = open(self.errpath, "w")
        self.proc = subprocess.Popen(args, stdout=self.outf, stderr=self.errf, start_new_session=True)
        procs.procs.append(self.proc)  # killed by the fixture if the test fails
        self.proc.ferry_name = name
        poll(lambda: os.path.exists(self.ready) or self.proc.poll() is not None, timeout=60,
             what="verifier ready")
        if self.proc.poll() is not None:
            raise AssertionError("verifier failed to start: " + self.stderr())

    def stop_io(self):
        open(self.stopf, "w").close()

    def allow_verify(self):
        open(self.verifyf, "w").close()

    def result(self, timeout=180):
        self.stop_io()
        self.allow_verify()
        self.proc.wait(timeout=timeout)
        self.outf.close()
        self.errf.close()
        with open(self.out) as f:
            text = f.read().strip()
        assert text, "verifier printed nothing: " + self.stderr()
        return json.loads(text.splitlines()[-1])

    def stderr(self):
        self.errf.flush()
        with open(self.errpath, errors="replace") as f:
            return f.read()
