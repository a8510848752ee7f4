"""ferry-httpload, the load generator of bench/control.

Against a real ferry-backend (and a real ferry-gateway for volume creation):
counts, errors, body templates, a closed port. Against a small scripted HTTP
server in this file (the backend never sends these): chunked replies, a server
that closes kept-alive connections, one that never answers, an unsupported
transfer coding — the protocol corners the tool must handle or report.
"""
import json
import os
import re
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from ferrytest import binary, free_port, http, wait_port

TOKEN = "httpload-test-token"


def run_load(url, *args, timeout=60):
    p = subprocess.run([binary("ferry-httpload"), "--url", url, *args], capture_output=True, text=True,
                       timeout=timeout)
    return p


def load_json(url, *args, timeout=60):
    p = run_load(url, *args, timeout=timeout)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["n"] >= 0 and set(out) >= {"n", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms", "seconds",
                                          "first_errors"}, out
    return out


def poll(fn, timeout=20.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout}s")


class Backend:
    def __init__(self, procs, tmp_path, with_gateway=False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        procs.start("backend", [binary("ferry-backend"), "--db", str(tmp_path / "map.db"),
                                "--listen", f"127.0.0.1:{self.port}", "--token", TOKEN, "--log-level", "warn"])
        wait_port("127.0.0.1", self.port, timeout=20)
        if with_gateway:
            data = tmp_path / "data"
            data.mkdir()
            admin = free_port()
            procs.start("gateway", [binary("ferry-gateway"), "--data-dir", str(data),
                                    "--nbd-listen", f"127.0.0.1:{free_port()}",
                                    "--admin-listen", f"127.0.0.1:{admin}", "--token", TOKEN,
                                    "--backend", self.url, "--heartbeat-ms", "300", "--log-level", "warn"])
            wait_port("127.0.0.1", admin, timeout=20)
            poll(lambda: self.call("PUT", "/tgtmaster/gatewaymap")[1].get("ServerCount") == 1,
                 what="gateway registration")

    def call(self, method, path, body=None):
        return http(method, self.url + path, body, token=TOKEN)

    def requests_total(self):
        st, text = self.call("GET", "/metrics")
        assert st == 200
        return int(re.search(r"^ferry_backend_http_requests_total (\d+)", text, re.M).group(1))


@pytest.fixture
def backend(procs, tmp_path):
    return Backend(procs, tmp_path)


def test_healthz_with_eight_clients_counts_every_request(backend):
    before = backend.requests_total()
    out = load_json(backend.url, "--path", "/healthz", "--count", "200", "--clients", "8")
    after = backend.requests_total()
    assert out["n"] == 200 and out["errors"] == 0 and out["first_errors"] == [], out
    assert 0 < out["p50_ms"] <= out["p90_ms"] <= out["p99_ms"] <= out["max_ms"], out
    assert out["seconds"] > 0
    # The server dispatched exactly those 200 (plus the second /metrics call).
    assert after - before == 201, (before, after)


def test_404_path_counts_every_request_as_an_error(backend):
    out = load_json(backend.url, "--path", "/v1/nothing/{i}", "--count", "50", "--clients", "4",
                    "--from", "10")
    assert out["n"] == 50 and out["errors"] == 50, out
    errs = out["first_errors"]
    assert [e["item"] for e in errs] == [10, 11, 12, 13, 14], errs
    for e in errs:
        assert e["status"] == 404 and e["error"] == ""
        assert json.loads(e["body"]) == {"error": f"no such endpoint: /v1/nothing/{e['item']}"}
    out = load_json(backend.url, "--path", "/v1/nothing", "--count", "3", "--keep-errors", "1")
    assert out["errors"] == 3 and len(out["first_errors"]) == 1


def test_missing_token_is_an_error(backend):
    out = load_json(backend.url, "--method", "POST", "--path", "/v1/reconcile", "--count", "2")
    assert out["errors"] == 2 and out["first_errors"][0]["status"] == 401, out


def test_post_body_template_creates_the_volumes(procs, tmp_path):
    b = Backend(procs, tmp_path, with_gateway=True)
    out = load_json(b.url, "--method", "POST", "--path", "/v1/volumes", "--token", TOKEN,
                    "--body", '{"name": "vol{i:05}", "size_gb": 1}', "--from", "7", "--count", "20",
                    "--clients", "4")
    assert out["n"] == 20 and out["errors"] == 0, out
    for i in range(7, 27):
        st, body = b.call("GET", f"/v1/volumes/vol{i:05d}")
        assert st == 200 and body["name"] == f"vol{i:05d}", (i, st, body)
    for i in (6, 27):
        assert b.call("GET", f"/v1/volumes/vol{i:05d}")[0] == 404
    # A path template on the same volumes; GET needs no body.
    out = load_json(b.url, "--path", "/v1/volumes/vol{i:05}", "--from", "7", "--count", "20", "--clients", "3")
    assert out["n"] == 20 and out["errors"] == 0, out


def test_closed_port_exits_non_zero_with_a_reason():
    port = free_port()
    p = run_load(f"http://127.0.0.1:{port}", "--path", "/healthz", "--count", "5")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr.startswith("ferry-httpload: cannot connect") and "refused" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, reason", [
    ([], "--url is required"),
    (["--url", "http://127.0.0.1:1", "--count", "1"], "--path is required"),
    (["--url", "http://127.0.0.1:1", "--path", "/"], "--count is required"),
    (["--url", "https://127.0.0.1:1", "--path", "/", "--count", "1"], "http://"),
    (["--url", "http://127.0.0.1:1", "--path", "/x{i:5}", "--count", "1"], "bad placeholder"),
    (["--url", "http://127.0.0.1:1", "--path", "/", "--body", "{i", "--count", "1"], "bad placeholder"),
    (["--url", "http://127.0.0.1:1", "--path", "x", "--count", "1"], "--path must start with '/'"),
    (["--url", "http://127.0.0.1:1", "--path", "/", "--count", "0"], "--count"),
    (["--url", "http://127.0.0.1:1", "--path", "/", "--count", "1", "--clients", "x"], "--clients"),
    (["--url", "http://127.0.0.1:1", "--path", "/", "--count", "1", "--method", "GE T"], "--method"),
    (["--url", "http://127.0.0.1:1", "--path", "/", "--count", "1", "--nope", "1"], "unknown flag --nope"),
])
def test_bad_arguments_exit_2_with_one_line(argv, reason):
    p = subprocess.run([binary("ferry-httpload"), *argv], capture_output=True, text=True, timeout=20)
    assert p.returncode == 2 and p.stdout == "", p
    assert p.stderr.startswith("ferry-httpload: ") and reason in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# --- a scripted server for the protocol corners --------------------------------------------------

class Scripted(socketserver.ThreadingTCPServer):
    """Answers by the first path segment; records every request it reads."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.lock = threading.Lock()
        self.requests = []  # (method, path, headers dict (lower-case names), body)
        self.connections = 0  # connections that carried at least one request
        self.release = threading.Event()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def seen(self, prefix):
        with self.lock:
            return sorted(r[1] for r in self.requests if r[1].startswith(prefix))


class ScriptedHandler(socketserver.BaseRequestHandler):
    def handle(self):
        srv, s = self.server, self.request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        first = True
        while True:
            while b"\r\n\r\n" not in buf:
                data = s.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ")
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
            n = int(headers.get("content-length", "0"))
            while len(buf) < n:
                buf += s.recv(65536)
            body, buf = buf[:n], buf[n:]
            with srv.lock:
                srv.requests.append((method, path, headers, body))
                srv.connections += first
            first = False
            if not self.answer(s, path):
                return

    def answer(self, s, path):
        """Sends the scripted reply; returns False to close the connection."""
        kind, _, item = path.strip("/").partition("/")
        if kind == "chunked" or kind == "chunked500":
            status = b"200 OK" if kind == "chunked" else b"500 Internal Server Error"
            payload = f'{{"item": "{item}", "pad": "{"x" * 300}"}}'.encode()
            pieces = [b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: chunked\r\n", b"Content-Type: application/json\r\n\r\n"]
            for k in range(0, len(payload), 97):
                part = payload[k:k + 97]
                pieces.append(b"%x;ext=1\r\n" % len(part))
                pieces.append(part + b"\r\n")
            pieces.append(b"0\r\nX-Trailer: yes\r\n\r\n")
            for p in pieces:
                s.sendall(p)
            return True
        if kind == "drop":
            return False
        if kind == "hang":
            self.server.release.wait(20)
            return False
        if kind == "gzip":
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
            return True
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return kind != "closeafter"  # closeafter: close without saying so (a stale keep-alive)


@pytest.fixture
def scripted():
    srv = Scripted()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    t.join(timeout=10)


def test_request_format_token_and_body_template(scripted):
    body = '{"connector": {"ip": "127.0.0.2", "host": "h{i}", "initiator": "iqn.1994-05.com.example:h{i:03}"}}'
    out = load_json(scripted.url, "--method", "POST", "--path", "/echo/vol{i:05}/attachments", "--body", body,
                    "--token", "tok", "--from", "98", "--count", "3", "--clients", "2")
    assert out["errors"] == 0 and out["n"] == 3, out
    with scripted.lock:
        reqs = sorted(scripted.requests, key=lambda r: r[1])
    assert [r[1] for r in reqs] == ["/echo/vol00098/attachments", "/echo/vol00099/attachments",
                                    "/echo/vol00100/attachments"]
    for (method, _, headers, raw), i in zip(reqs, (98, 99, 100)):
        assert method == "POST"
        assert headers["x-ferry-token"] == "tok" and headers["content-type"] == "application/json"
        assert headers["host"] == scripted.url[len("http://"):]
        assert json.loads(raw) == {"connector": {"ip": "127.0.0.2", "host": f"h{i}",
                                                 "initiator": f"iqn.1994-05.com.example:h{i:03d}"}}
        assert int(headers["content-length"]) == len(raw)
    # Without a body: Content-Length: 0, no Content-Type, no token header unless given.
    load_json(scripted.url, "--method", "PUT", "--path", "/echo/nobody", "--count", "1")
    _, _, headers, raw = [r for r in scripted.requests if r[1] == "/echo/nobody"][0]
    assert raw == b"" and headers["content-length"] == "0"
    assert "content-type" not in headers and "x-ferry-token" not in headers
    # One keep-alive connection per client: at most 2 for the first run, 1 for the second.
    assert 2 <= scripted.connections <= 3


def test_chunked_replies_are_read_whole(scripted):
    out = load_json(scripted.url, "--path", "/chunked/{i}", "--count", "40", "--clients", "4")
    assert out["n"] == 40 and out["errors"] == 0, out
    assert 1 <= scripted.connections <= 4  # kept alive across chunked replies
    out = load_json(scripted.url, "--path", "/chunked500/{i}", "--count", "4", "--clients", "1")
    assert out["errors"] == 4
    e = out["first_errors"][0]
    assert e["status"] == 500 and e["body"] == '{"item": "0", "pad": "' + "x" * 178, e


def test_unsupported_transfer_coding_is_a_clear_error(scripted):
    out = load_json(scripted.url, "--path", "/gzip/{i}", "--count", "3", "--clients", "1")
    assert out["n"] == 3 and out["errors"] == 3, out
    assert "unsupported Transfer-Encoding" in out["first_errors"][0]["error"]
    assert out["first_errors"][0]["status"] == 0


def test_stale_keep_alive_reconnects_and_retries_once(scripted):
    # The server closes after every reply without saying so: each next request
    # finds its connection closed, reconnects once and succeeds.
    out = load_json(scripted.url, "--path", "/closeafter/{i}", "--count", "30", "--clients", "3")
    assert out["n"] == 30 and out["errors"] == 0, out
    assert scripted.seen("/closeafter/") == sorted(f"/closeafter/{i}" for i in range(30))
    # A server that closes every time: each request is tried exactly twice, then counted as an error.
    out = load_json(scripted.url, "--path", "/drop/{i}", "--count", "5", "--clients", "2")
    assert out["n"] == 5 and out["errors"] == 5, out
    assert "closed" in out["first_errors"][0]["error"], out
    assert scripted.seen("/drop/") == sorted(f"/drop/{i}" for i in range(5) for _ in range(2))


def test_timeout_per_request(scripted):
    t0 = time.monotonic()
    out = load_json(scripted.url, "--path", "/hang/{i}", "--count", "2", "--clients", "2", "--timeout-ms", "300")
    elapsed = time.monotonic() - t0
    assert out["n"] == 2 and out["errors"] == 2, out
    assert "timeout" in out["first_errors"][0]["error"], out
    assert out["max_ms"] >= 300 and elapsed < 15, (out, elapsed)
