"""Helpers for the ferry-gateway integration tests: start a gateway on free
loopback ports over a data directory and wait until its admin API answers."""
import hashlib
import os
import subprocess
import time

from ferrytest import binary, free_port, http, wait_port


class Gateway:
    def __init__(self, proc, nbd_port, admin_port, data_dir, token):
        self.proc = proc
        self.nbd_port = nbd_port
        self.admin_port = admin_port
        self.data_dir = data_dir
        self.token = token
        self.admin = f"http://127.0.0.1:{admin_port}"

    def uri(self, export):
        return f"nbd://127.0.0.1:{self.nbd_port}/{export}"

    def api(self, method, path, body=None, token=None):
        return http(method, self.admin + path, body, token=token if token is not None else self.token)

    def create(self, name, size, **extra):
        body = {"name": name, "size": size}
        body.update(extra)
        st, js = self.api("POST", "/v1/volumes", body)
        assert st == 201, (st, js)
        return js


def start_gateway(procs, data_dir, name="gw", token="", extra=()):
    nbd_port, admin_port = free_port(), free_port()
    argv = [binary("ferry-gateway"), "--data-dir", str(data_dir),
            "--nbd-listen", f"127.0.0.1:{nbd_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
            "--chunk-size", "65536", "--log-level", "debug", *extra]
    if token:
        argv += ["--token", token]
    p = procs.start(name, argv)
    deadline = time.time() + 15
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"gateway exited with {p.returncode}: " + open(p.ferry_log).read()[-2000:])
        try:
            st, js = http("GET", f"http://127.0.0.1:{admin_port}/healthz", timeout=1)
            if st == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        raise TimeoutError("gateway admin API did not answer")
    wait_port("127.0.0.1", nbd_port)
    return Gateway(p, nbd_port, admin_port, str(data_dir), token)


def run(argv, timeout=120, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{argv} failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    return r


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def random_file(path, size, seed=0):
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rnd.randbytes(n))
            left -= n
    return path


def connect(gw, export, structured=True):
    import nbd
    h = nbd.NBD()
    if not structured:
        h.set_request_structured_replies(False)
    h.connect_uri(gw.uri(export))
    return h


def raw_session(port, export):
    """Fixed-newstyle handshake by hand (simple replies); returns the socket in
    the transmission phase."""
    import socket
    import struct
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    assert s.recv(18)[:8] == b"NBDMAGIC"
    s.sendall(struct.pack(">I", 3))
    name = export.encode()
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, 4 + len(name) + 2) + struct.pack(">I", len(name)) + name + b"\0\0")
    buf = b""
    while True:
        while len(buf) < 20:
            buf += s.recv(4096)
        magic, opt, typ, ln = struct.unpack(">QIII", buf[:20])
        assert magic == 0x0003e889045565a9
        while len(buf) < 20 + ln:
            buf += s.recv(4096)
        buf = buf[20 + ln:]
        if typ == 1:  # ACK
            assert not buf
            return s
        assert typ == 3, hex(typ)  # NBD_REP_INFO
