"""ferry-gateway under several processes, hostile clients and a backend:
two gateways on one data directory, malformed handshakes and requests that
must not stall good clients, registration/heartbeat, clean shutdown."""
import http.server
import socket
import struct
import threading
import time
import urllib.parse

import nbd
import pytest

from ferrytest import free_port
from gateway_helpers import raw_session, connect, start_gateway

MiB = 1 << 20


def test_two_gateways_share_one_data_dir(procs, tmp_path):
    g1 = start_gateway(procs, tmp_path / "data", name="gw1")
    g2 = start_gateway(procs, tmp_path / "data", name="gw2")
    g1.create("shared", 8 * MiB)
    st, js = g2.api("GET", "/v1/volumes/shared")
    assert st == 200 and js["size"] == 8 * MiB
    a = connect(g1, "shared")
    payload = bytes(range(256)) * 4096  # 1 MiB
    a.pwrite(payload, 3 * MiB)
    a.flush()
    b = connect(g2, "shared")
    assert b.pread(MiB, 3 * MiB) == payload
    # A snapshot made through gw2 is readable through gw1, and stays frozen.
    assert g2.api("POST", "/v1/volumes/shared/snapshots", {"name": "s"})[0] == 201
    b.pwrite(b"\xff" * MiB, 3 * MiB)
    b.flush()
    s = connect(g1, "shared:s")
    assert s.pread(MiB, 3 * MiB) == payload
    assert a.pread(MiB, 3 * MiB) == b"\xff" * MiB
    # Extend through gw1, gw2 sees the new size.
    assert g1.api("POST", "/v1/volumes/shared/extend", {"size": 16 * MiB})[0] == 200
    assert g2.api("GET", "/v1/volumes/shared")[1]["size"] == 16 * MiB
    for h in (a, b, s):
        h.shutdown()


def _recv_until_closed(sock, timeout):
    """Reads until EOF; returns (bytes, closed_within_timeout)."""
    sock.settimeout(timeout)
    data = b""
    end = time.time() + timeout
    try:
        while time.time() < end:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data, False


def test_malformed_handshakes_do_not_stall_a_good_client(procs, tmp_path):
    gw = start_gateway(procs, tmp_path / "data", extra=["--handshake-timeout-ms", "1500"])
    gw.create("good", 4 * MiB)
    bad = []
    # 1. silent clients (never send a byte)
    for _ in range(20):
        bad.append(socket.create_connection(("127.0.0.1", gw.nbd_port)))
    # 2. a client announcing a 4 GiB option and then stalling
    s = socket.create_connection(("127.0.0.1", gw.nbd_port))
    s.recv(18)
    s.sendall(struct.pack(">I", 1) + b"IHAVEOPT" + struct.pack(">II", 7, 0xFFFFFFF0))
    bad.append(s)
    # 3. a client stalling in the middle of an option
    s = socket.create_connection(("127.0.0.1", gw.nbd_port))
    s.recv(18)
    s.sendall(struct.pack(">I", 1) + b"IHAVEOPT" + struct.pack(">II", 7, 100) + b"\0\0")
    bad.append(s)

    t0 = time.time()
    h = connect(gw, "good")
    h.pwrite(b"g" * 65536, 0)
    assert h.pread(65536, 0) == b"g" * 65536
    assert time.time() - t0 < 1.0, "good client was stalled"

    # Garbage instead of client flags: the server hangs up at once.
    g = socket.create_connection(("127.0.0.1", gw.nbd_port))
    assert g.recv(18)[:8] == b"NBDMAGIC"
    g.sendall(b"GET / HTTP/1.1\r\n\r\n" * 10)
    _, closed = _recv_until_closed(g, 5)
    assert closed
    # The 4 GiB option is refused by closing.
    _, closed = _recv_until_closed(bad[20], 5)
    assert closed
    # Silent and stalled clients are dropped after the handshake timeout.
    for s in (bad[0], bad[21]):
        _, closed = _recv_until_closed(s, 6)
        assert closed
    assert h.pread(65536, 0) == b"g" * 65536
    h.shutdown()
    for s in bad + [g]:
        s.close()
    assert gw.proc.poll() is None


def test_malformed_requests(procs, tmp_path):
    gw = start_gateway(procs, tmp_path / "data")
    gw.create("mr", MiB)
    good = connect(gw, "mr")
    # Unknown command and bad flags: an error reply, the connection stays usable.
    s = raw_session(gw.nbd_port, "mr")
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 42, 7, 0, 512))
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0x8000, 0, 8, 0, 512))
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 9, 0, 512))  # valid read
    replies = b""
    s.settimeout(5)
    while len(replies) < 16 * 3 + 512:
        replies += s.recv(65536)
    m, err, cookie = struct.unpack(">IIQ", replies[:16])
    assert (m, err, cookie) == (0x67446698, 22, 7)
    m, err, cookie = struct.unpack(">IIQ", replies[16:32])
    assert (err, cookie) == (22, 8)
    m, err, cookie = struct.unpack(">IIQ", replies[32:48])
    assert (err, cookie) == (0, 9)
    # A write longer than the maximum payload cannot be framed: the server hangs up.
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 10, 0, 0xFFFFFFFF))
    _, closed = _recv_until_closed(s, 5)
    assert closed
    # Bad magic: hang up as well.
    s2 = raw_session(gw.nbd_port, "mr")
    s2.sendall(b"\xde\xad\xbe\xef" + b"\0" * 24)
    _, closed = _recv_until_closed(s2, 5)
    assert closed
    # A client that disconnects with requests in flight.
    s3 = raw_session(gw.nbd_port, "mr")
    for i in range(32):
        s3.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, 0, 65536))
    s3.close()
    good.pwrite(b"still fine" + b"\0" * 4086, 0)
    assert good.pread(4096, 0)[:10] == b"still fine"
    good.shutdown()
    assert gw.proc.poll() is None


class _Backend(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _start_fake_backend(port, calls):
    class H(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            u = urllib.parse.urlparse(self.path)
            calls.append((u.path, urllib.parse.parse_qs(u.query), self.headers.get("X-Ferry-Token")))
            body = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = _Backend(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _wait(cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_registration_heartbeat_and_backend_outage(procs, tmp_path):
    port = free_port()
    calls = []
    # The backend is down when the gateway starts: not fatal.
    gw = start_gateway(procs, tmp_path / "data", token="tok",
                       extra=["--backend", f"http://127.0.0.1:{port}", "--heartbeat-ms", "200"])
    gw.create("v", MiB)
    srv = _start_fake_backend(port, calls)
    try:
        assert _wait(lambda: len(calls) >= 3, 10), calls
        path, q, token = calls[0]
        assert path == "/tgtmaster/register/gateway"
        assert q["gateway"] == [f"127.0.0.1:{gw.nbd_port}:{gw.admin_port}"]
        assert token == "tok"
    finally:
        srv.shutdown()
        srv.server_close()
    assert gw.proc.poll() is None
    h = connect(gw, "v")
    h.pwrite(b"x" * 512, 0)
    h.shutdown()


def test_sigterm_stops_cleanly_with_clients_connected(procs, tmp_path):
    gw = start_gateway(procs, tmp_path / "data")
    gw.create("v", MiB)
    h = connect(gw, "v")
    h.pwrite(b"y" * 4096, 0, nbd.CMD_FLAG_FUA)
    idle = socket.create_connection(("127.0.0.1", gw.nbd_port))
    gw.proc.terminate()
    assert gw.proc.wait(timeout=15) == 0
    idle.close()
    # The data written with FUA is there for the next gateway.
    g2 = start_gateway(procs, tmp_path / "data", name="gw2")
    h2 = connect(g2, "v")
    assert h2.pread(4096, 0) == b"y" * 4096
    h2.shutdown()


def test_bad_flags_exit_with_usage(tmp_path):
    import subprocess
    from ferrytest import binary
    for argv in (["--nbd-listen", "nope"], ["--chunk-size", "1000"], ["--bogus", "1"],
                 ["--backend", "ftp://x"], ["--log-level", "loud"], ["--max-connections", "0"]):
        r = subprocess.run([binary("ferry-gateway"), "--data-dir", str(tmp_path), *argv],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (argv, r.stderr)
        assert "ferry-gateway:" in r.stderr


def test_ini_config_file_and_flag_override(procs, tmp_path):
    from ferrytest import binary, http
    nbd_port, admin_port, other = free_port(), free_port(), free_port()
    ini = tmp_path / "ferry.ini"
    ini.write_text(f"""[gateway]
data_dir = {tmp_path / 'data'}
nbd_listen = 127.0.0.1:{other}
admin_listen = 127.0.0.1:{admin_port}
chunk_size = 131072

[auth]
token = from-ini
""")
    p = procs.start("gw", [binary("ferry-gateway"), "--config", str(ini), "--nbd-listen", f"127.0.0.1:{nbd_port}"])
    assert _wait(lambda: _health(admin_port) is not None or p.poll() is not None, 15)
    js = _health(admin_port)
    assert js is not None, open(p.ferry_log).read()
    assert js["nbd"] == f"127.0.0.1:{nbd_port}"  # the flag wins over the file
    assert js["data_dir"] == str(tmp_path / "data")
    url = f"http://127.0.0.1:{admin_port}/v1/volumes"
    assert http("POST", url, {"name": "v", "size": MiB})[0] == 401
    st, v = http("POST", url, {"name": "v", "size": MiB}, token="from-ini")
    assert st == 201 and v["chunk_size"] == 131072


def _health(admin_port):
    from ferrytest import http
    try:
        st, js = http("GET", f"http://127.0.0.1:{admin_port}/healthz", timeout=1)
        return js if st == 200 else None
    except OSError:
        return None


def test_many_concurrent_connections(procs, tmp_path):
    gw = start_gateway(procs, tmp_path / "data")
    gw.create("many", 32 * MiB)
    errors = []

    def worker(k):
        try:
            h = connect(gw, "many")
            pat = bytes([k + 1]) * (256 * 1024)
            for j in range(4):
                h.pwrite(pat, k * MiB + j * 256 * 1024)
            h.flush()
            for j in range(4):
                if h.pread(256 * 1024, k * MiB + j * 256 * 1024) != pat:
                    errors.append(f"conn {k}: bad data")
            h.shutdown()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"conn {k}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    h = connect(gw, "many")
    for k in range(24):
        assert h.pread(4096, k * MiB + 3 * 256 * 1024) == bytes([k + 1]) * 4096
    h.shutdown()


def test_connections_beyond_max_connections_are_refused_and_served_again_when_one_ends(procs, tmp_path):
    gw = start_gateway(procs, tmp_path / "data", extra=("--max-connections", "2"))
    gw.create("v", MiB)
    a, b = connect(gw, "v"), connect(gw, "v")
    with pytest.raises(nbd.Error):
        connect(gw, "v")
    a.pwrite(b"a" * 4096, 0)  # the two admitted clients keep working
    assert b.pread(4096, 0) == b"a" * 4096
    a.shutdown()
    assert _wait(lambda: _try_connect(gw) is not None, 10)
    b.shutdown()
    log = open(gw.proc.ferry_log).read()
    assert "at most 2 connections" in log and "2 connections already" in log


def test_out_of_threads_refuses_the_new_client_and_keeps_serving(procs, tmp_path):
    # An address-space limit just above what the gateway maps now leaves room
    # for a few connection threads (8 MiB stack each); the next ones cannot
    # start. The gateway must refuse those clients, not die with them.
    import resource
    gw = start_gateway(procs, tmp_path / "data")
    gw.create("v", MiB)
    vm = int(next(l.split()[1] for l in open(f"/proc/{gw.proc.pid}/status") if l.startswith("VmSize:")))
    limit = (vm + 30 * 1024) * 1024
    resource.prlimit(gw.proc.pid, resource.RLIMIT_AS, (limit, limit))
    admitted, refused = [], 0
    for _ in range(12):
        try:
            admitted.append(connect(gw, "v"))
        except nbd.Error:
            refused += 1
    assert admitted and refused, (len(admitted), refused)
    for k, h in enumerate(admitted):
        h.pwrite(bytes([k + 1]) * 4096, k * 4096)
        assert h.pread(4096, k * 4096) == bytes([k + 1]) * 4096
    for h in admitted:
        h.shutdown()
    assert _wait(lambda: _try_connect(gw) is not None, 10)  # room again
    assert gw.proc.poll() is None
    assert "cannot start its thread" in open(gw.proc.ferry_log).read()


def _try_connect(gw):
    try:
        h = connect(gw, "v")
    except nbd.Error:
        return None
    h.shutdown()
    return True


def test_client_that_stops_reading_replies_does_not_stall_other_clients(procs, tmp_path):
    # One client queues 1 MiB reads and never reads a reply (a frozen target):
    # its replies fill both socket buffers and the gateway blocks sending them.
    # Writes and flushes of another client must not wait behind it.
    gw = start_gateway(procs, tmp_path / "data")
    gw.create("stuck", 256 * MiB)
    gw.create("busy", 4 * MiB)
    stuck = connect(gw, "stuck")
    for i in range(160):  # 160 MiB of replies, far beyond the socket buffers
        stuck.aio_pread(nbd.Buffer(MiB), (i % 256) * MiB)
    time.sleep(1.0)  # the gateway is now blocked on the stuck client's socket
    h = connect(gw, "busy")
    t0 = time.time()
    for i in range(16):  # more writes than the gateway's pool has workers
        h.pwrite(bytes([i]) * 4096, i * 4096, nbd.CMD_FLAG_FUA)
    h.flush()
    assert h.pread(4096, 15 * 4096) == bytes([15]) * 4096
    took = time.time() - t0
    assert took < 3.0, f"another client's writes waited {took:.1f} s behind a client that reads nothing"
    h.shutdown()
