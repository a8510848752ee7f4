"""Large READs are sent with sendfile() from the chunk files (zero copy).

Every test compares bytes with a reference kept in Python: large ranges
(1 MiB, 3 MiB across chunks, holes, a snapshot's shared chunks, copy-on-write
chunks, trimmed and punched ranges, an extended volume, a clone), through
python3-libnbd (structured and simple replies), nbdcopy and qemu-img, many
reads of mixed sizes in flight at once (small batched replies, inline
zero-copy replies and worker-pool replies must never interleave), a client
that stops reading its replies (a snapshot and a revert still go through at
once, and the replies are right afterwards), and a client that hangs up in
the middle of a large reply."""
import os
import random
import socket
import struct
import time

import nbd
import pytest

from gateway_helpers import raw_session, connect, run, sha256, start_gateway

KiB = 1 << 10
MiB = 1 << 20
SIZE = 20 * MiB + 3 * 512  # not a multiple of any chunk size


def _bytes(n, seed):
    return random.Random(seed).randbytes(n)


class Model:
    """A volume's expected contents, changed alongside the real one."""

    def __init__(self, size):
        self.b = bytearray(size)

    def write(self, h, off, data):
        h.pwrite(data, off)
        self.b[off:off + len(data)] = data

    def zero(self, h, off, n, trim=False):
        if trim:
            h.trim(n, off)
        else:
            h.zero(n, off)
        self.b[off:off + n] = bytes(n)


def _build(gw, tmp_path):
    """vol zc (written, snapshot s1, then COW/trim/zero/extend), clone zcc of s1.
    Returns {export: expected bytes}."""
    gw.create("zc", SIZE)
    h = connect(gw, "zc")
    m = Model(SIZE)
    m.write(h, 0, _bytes(5 * MiB, 1))
    m.write(h, 7 * MiB + 4 * KiB, _bytes(2 * MiB + 100 * 512, 2))
    m.write(h, 12 * MiB, _bytes(MiB // 2, 3))
    m.write(h, SIZE - 64 * KiB, _bytes(64 * KiB, 4))
    h.flush()
    st, js = gw.api("POST", "/v1/volumes/zc/snapshots", {"name": "s1"})
    assert st == 201, js
    snap = bytes(m.b)
    m.write(h, 2 * MiB + 512, _bytes(300 * KiB, 5))       # copy-on-write of shared chunks
    m.zero(h, 3 * MiB, MiB, trim=True)                    # whole shared chunks trimmed
    m.zero(h, 8 * MiB + 4 * KiB, 8 * KiB)                 # a punched hole in a shared chunk
    h.flush()
    h.shutdown()
    st, js = gw.api("POST", "/v1/volumes/zc/extend", {"size": SIZE + 4 * MiB})
    assert st == 200, js
    vol = bytes(m.b) + bytes(4 * MiB)
    st, js = gw.api("POST", "/v1/volumes", {"name": "zcc", "size": SIZE + 2 * MiB,
                                            "source": {"volume": "zc", "snapshot": "s1"}})
    assert st == 201, js
    c = connect(gw, "zcc")
    cm = Model(SIZE + 2 * MiB)
    cm.b[:SIZE] = snap
    cm.write(c, 4 * MiB - 4 * KiB, _bytes(MiB, 6))        # across a chunk edge of the clone
    cm.write(c, SIZE + MiB, _bytes(4 * KiB, 7))           # into the extension
    c.flush()
    c.shutdown()
    return {"zc": vol, "zc:s1": snap, "zcc": bytes(cm.b)}


def _ranges(size, seed):
    fixed = [(0, MiB), (512 * 3, 3 * MiB), (5 * MiB - 64 * KiB, 2 * MiB + 128 * KiB),
             (14 * MiB, MiB), (3 * MiB, MiB), (8 * MiB, 64 * KiB), (8 * MiB + 512, 64 * KiB - 512),
             (size - 3 * MiB, 3 * MiB), (size - 64 * KiB, 64 * KiB), (0, 32 * MiB if size >= 32 * MiB else size)]
    rnd = random.Random(seed)
    for _ in range(24):
        n = rnd.choice([64 * KiB, 64 * KiB + 512, 256 * KiB, 256 * KiB + 512, MiB, 3 * MiB, 4 * MiB + 4096])
        off = rnd.randrange(0, (size - n) // 512 + 1) * 512
        fixed.append((off, n))
    return [(o, n) for o, n in fixed if o + n <= size]


@pytest.mark.parametrize("chunk", [65536, 1048576])
def test_large_reads_match_reference(procs, tmp_path, chunk):
    gw = start_gateway(procs, tmp_path / "data", extra=["--chunk-size", str(chunk)])
    expect = _build(gw, tmp_path)
    for export, ref in expect.items():
        for structured in (True, False):
            h = connect(gw, export, structured=structured)
            assert h.get_size() == len(ref)
            for off, n in _ranges(len(ref), hash((export, structured)) & 0xffff):
                got = h.pread(n, off)
                assert got == ref[off:off + n], (export, structured, off, n)
            h.shutdown()
    assert gw.proc.poll() is None


def test_nbdcopy_and_qemu_img_whole_exports(procs, tmp_path):
    gw = start_gateway(procs, tmp_path / "data", extra=["--chunk-size", "1048576"])
    expect = _build(gw, tmp_path)
    for export, ref in expect.items():
        want = tmp_path / "want.raw"
        want.write_bytes(ref)
        a, b = tmp_path / "a.raw", tmp_path / "b.raw"
        run(["nbdcopy", "--request-size", str(4 * MiB), gw.uri(export), str(a)])
        run(["qemu-img", "convert", "-f", "raw", "-O", "raw", gw.uri(export), str(b)])
        assert sha256(a) == sha256(want), export
        assert sha256(b) == sha256(want), export
        for p in (a, b, want):
            p.unlink()


def test_many_mixed_reads_in_flight(procs, tmp_path):
    gw = start_gateway(procs, tmp_path / "data")
    expect = _build(gw, tmp_path)
    ref = expect["zc"]
    for structured in (True, False):
        h = connect(gw, "zc", structured=structured)
        rnd = random.Random(7 if structured else 8)
        pending = []
        for _ in range(200):
            n = rnd.choice([512, 4 * KiB, 60 * KiB, 64 * KiB - 512, 64 * KiB, 200 * KiB,
                            256 * KiB, 256 * KiB + 512, MiB, 2 * MiB + 512])
            off = rnd.randrange(0, (len(ref) - n) // 512 + 1) * 512
            buf = nbd.Buffer(n)
            pending.append((h.aio_pread(buf, off), buf, off, n))
        deadline = time.time() + 60
        left = list(pending)
        while left:
            assert time.time() < deadline, f"{len(left)} reads never completed"
            h.poll(1000)
            left = [p for p in left if not h.aio_command_completed(p[0])]
        for _, buf, off, n in pending:
            assert buf.to_bytearray() == ref[off:off + n], (structured, off, n)
        h.shutdown()


def _read_req(cookie, off, n):
    return struct.pack(">IHHQQI", 0x25609513, 0, 0, cookie, off, n)


def _recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        b = s.recv(min(n - len(out), 4 * MiB))
        assert b, "connection closed"
        out += b
    return bytes(out)


def _server_tx_queue(server_port, client_port):
    """Bytes the gateway's socket of this connection has queued but not had acknowledged."""
    want_local, want_remote = f"{server_port:04X}", f"{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            local, remote, queues = parts[1], parts[2], parts[4]
            if local.endswith(":" + want_local) and remote.endswith(":" + want_remote):
                return int(queues.split(":")[0], 16)
    return None


def test_stalled_reader_does_not_hold_snapshot_or_revert(procs, tmp_path):
    gw = start_gateway(procs, tmp_path / "data")
    size = 80 * MiB
    gw.create("st", size)
    data = _bytes(64 * MiB, 11)
    h = connect(gw, "st")
    for off in range(0, len(data), 8 * MiB):
        h.pwrite(data[off:off + 8 * MiB], off)
    h.flush()
    # 16 x 4 MiB (pool path) and 16 x 128 KiB (inline path), none read yet.
    s = raw_session(gw.nbd_port, "st")
    reqs = [(i, i * 4 * MiB, 4 * MiB) for i in range(16)]
    reqs += [(100 + i, i * 4 * MiB + 512, 128 * KiB) for i in range(16)]
    s.sendall(b"".join(_read_req(c, o, n) for c, o, n in reqs))
    client_port = s.getsockname()[1]
    # Wait until the gateway cannot send more: its socket holds unsent bytes.
    deadline = time.time() + 20
    while True:
        q = _server_tx_queue(gw.nbd_port, client_port)
        if q is not None and q > 0:
            break
        assert time.time() < deadline, "gateway never filled the client's window"
        time.sleep(0.02)
    # The sends are stuck, yet snapshot and revert go through at once (the
    # revert replaces every chunk file that the stuck replies read from).
    t0 = time.time()
    st, js = gw.api("POST", "/v1/volumes/st/snapshots", {"name": "s1"})
    assert st == 201, js
    st, js = gw.api("POST", "/v1/volumes/st/revert", {"snapshot": "s1"})
    assert st == 200, js
    assert time.time() - t0 < 1.5, "snapshot/revert waited for a stalled client"
    assert _server_tx_queue(gw.nbd_port, client_port) > 0  # still stalled meanwhile
    # Now drain: every reply is whole, in one piece, and holds the data.
    want = {c: (o, n) for c, o, n in reqs}
    for _ in reqs:
        magic, err, cookie = struct.unpack(">IIQ", _recv_exact(s, 16))
        assert magic == 0x67446698 and err == 0, (hex(magic), err)
        o, n = want.pop(cookie)
        assert _recv_exact(s, n) == data[o:o + n], (cookie, o, n)
    s.close()
    h.shutdown()
    assert gw.proc.poll() is None


def test_client_hanging_up_mid_reply(procs, tmp_path):
    gw = start_gateway(procs, tmp_path / "data")
    gw.create("hu", 64 * MiB)
    h = connect(gw, "hu")
    data = _bytes(32 * MiB, 12)
    h.pwrite(data, 0)
    for round_ in range(5):
        s = raw_session(gw.nbd_port, "hu")
        s.sendall(b"".join(_read_req(i, (i % 8) * 4 * MiB, 4 * MiB) for i in range(8)))
        s.sendall(b"".join(_read_req(100 + i, i * 128 * KiB, 128 * KiB) for i in range(8)))
        _recv_exact(s, 16 + 100 * KiB * (round_ + 1))  # part of a reply, then gone
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.close()
        assert h.pread(4 * MiB, 8 * MiB) == data[8 * MiB:12 * MiB]
    h.shutdown()
    assert gw.proc.poll() is None
