"""ferry-gateway against real NBD clients: nbdinfo, nbdcopy, qemu-img, qemu-io
and libnbd (python3-libnbd). Every test checks bytes, not just exit codes."""
import os

import nbd
import pytest

from gateway_helpers import connect, random_file, run, sha256, start_gateway

MiB = 1 << 20


@pytest.fixture
def gw(procs, tmp_path):
    return start_gateway(procs, tmp_path / "data")


def test_nbdinfo_size_block_sizes_and_list(gw):
    gw.create("vol1", 64 * MiB)
    gw.create("vol2", 8 * MiB)
    out = run(["nbdinfo", "--no-content", "--json", gw.uri("vol1")]).stdout
    import json
    info = json.loads(out)["exports"][0]
    assert info["export-size"] == 64 * MiB
    assert info["block_size_minimum"] == 512
    assert info["block_size_preferred"] == 4096
    assert info["block_size_maximum"] == 32 * MiB
    assert info["is_read_only"] is False
    assert info["can_flush"] and info["can_fua"] and info["can_trim"] and info["can_zero"]
    assert "base:allocation" in info["contexts"]
    listed = json.loads(run(["nbdinfo", "--no-content", "--json", "--list", f"nbd://127.0.0.1:{gw.nbd_port}"]).stdout)
    names = sorted(e["export-name"] for e in listed["exports"])
    assert names == ["vol1", "vol2"]
    # An unknown export is refused during the handshake.
    r = run(["nbdinfo", gw.uri("nope")], check=False)
    assert r.returncode != 0


def test_qemu_img_convert_round_trip(gw, tmp_path):
    gw.create("qv", 24 * MiB)
    src = random_file(tmp_path / "src.raw", 24 * MiB, seed=1)
    run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), gw.uri("qv")])
    back = tmp_path / "back.raw"
    run(["qemu-img", "convert", "-f", "raw", "-O", "raw", gw.uri("qv"), str(back)])
    assert sha256(back) == sha256(src)


def test_nbdcopy_round_trip_and_between_volumes(gw, tmp_path):
    gw.create("a", 16 * MiB)
    gw.create("b", 16 * MiB)
    src = random_file(tmp_path / "src.raw", 16 * MiB, seed=2)
    run(["nbdcopy", str(src), gw.uri("a")])
    run(["nbdcopy", gw.uri("a"), gw.uri("b")])
    back = tmp_path / "back.raw"
    run(["nbdcopy", gw.uri("b"), str(back)])
    assert sha256(back) == sha256(src)


def test_holes_read_as_zeros_and_map(gw, tmp_path):
    gw.create("holes", 16 * MiB)
    h = connect(gw, "holes")
    data = os.urandom(64 * 1024)
    h.pwrite(data, 4 * MiB)
    assert h.pread(64 * 1024, 4 * MiB) == data
    assert h.pread(MiB, 0) == b"\0" * MiB  # never written
    assert h.pread(MiB, 15 * MiB) == b"\0" * MiB
    h.shutdown()
    out = run(["nbdinfo", "--map", gw.uri("holes")]).stdout
    rows = [line.split() for line in out.strip().splitlines()]
    # First extent is a hole, the written chunk is data, the tail is a hole again.
    assert rows[0][0] == "0" and rows[0][3].startswith("hole"), out
    assert any(r[3] == "data" and int(r[0]) <= 4 * MiB < int(r[0]) + int(r[1]) for r in rows), out
    assert rows[-1][3].startswith("hole"), out
    assert sum(int(r[1]) for r in rows) == 16 * MiB
    mapped = run(["qemu-img", "map", "--output=json", "-f", "raw", gw.uri("holes")]).stdout
    import json
    ext = json.loads(mapped)
    assert any(e["data"] for e in ext) and any(not e["data"] for e in ext)
    assert sum(e["length"] for e in ext) == 16 * MiB


def test_trim_and_write_zeroes(gw):
    gw.create("tz", 8 * MiB)
    h = connect(gw, "tz")
    pattern = b"\xab" * (2 * MiB)
    h.pwrite(pattern, 0)
    h.pwrite(pattern, 4 * MiB)
    h.trim(MiB, 0)
    assert h.pread(MiB, 0) == b"\0" * MiB
    assert h.pread(MiB, MiB) == b"\xab" * MiB
    h.zero(4096, 4 * MiB + 512)
    got = h.pread(8192, 4 * MiB)
    assert got[:512] == b"\xab" * 512 and got[512:4608] == b"\0" * 4096 and got[4608:] == b"\xab" * (8192 - 4608)
    h.zero(MiB, 5 * MiB, nbd.CMD_FLAG_NO_HOLE)
    assert h.pread(MiB, 5 * MiB) == b"\0" * MiB
    h.trim(4096, 6 * MiB - 4096, nbd.CMD_FLAG_FUA)
    assert h.pread(8192, 6 * MiB - 8192) == b"\0" * 8192
    h.flush()
    h.shutdown()


def test_fua_write_and_qemu_io(gw):
    gw.create("fua", 4 * MiB)
    r = run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a -f 0 64k", "-c", "write -P 0x33 1M 8k",
             "-c", "flush", "-c", "write -z 1M 4k", gw.uri("fua")])
    assert "wrote 65536/65536" in r.stdout
    r = run(["qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 64k", "-c", "read -P 0 1M 4k",
             "-c", "read -P 0x33 1052672 4k", gw.uri("fua")])
    assert "Pattern verification failed" not in r.stdout + r.stderr
    h = connect(gw, "fua")
    h.pwrite(b"\x11" * 4096, 8192, nbd.CMD_FLAG_FUA)
    assert h.pread(4096, 8192) == b"\x11" * 4096
    h.shutdown()


def test_out_of_range_and_bad_requests_get_errors_not_a_hangup(gw):
    gw.create("edge", MiB)
    h = connect(gw, "edge")
    h.set_strict_mode(0)  # let libnbd send what the server must refuse
    with pytest.raises(nbd.Error) as e:
        h.pread(4096, MiB - 1024)
    assert e.value.errno in ("EINVAL", 22) or "Invalid" in str(e.value)
    with pytest.raises(nbd.Error):
        h.pwrite(b"x" * 4096, MiB)
    # The connection is still usable afterwards.
    h.pwrite(b"ok", 0)
    assert h.pread(2, 0) == b"ok"
    h.shutdown()


def test_snapshot_export_is_read_only_and_frozen(gw):
    gw.create("sv", 4 * MiB)
    h = connect(gw, "sv")
    h.pwrite(b"\x01" * MiB, 0)
    h.flush()
    st, js = gw.api("POST", "/v1/volumes/sv/snapshots", {"name": "s1"})
    assert st == 201, js
    h.pwrite(b"\x02" * MiB, 0)  # after the snapshot
    s = connect(gw, "sv:s1")
    assert s.is_read_only()
    assert s.get_size() == 4 * MiB
    assert s.pread(MiB, 0) == b"\x01" * MiB
    s.set_strict_mode(0)
    with pytest.raises(nbd.Error):
        s.pwrite(b"\x03" * 4096, 0)
    with pytest.raises(nbd.Error):
        s.trim(4096, 0)
    assert s.pread(4096, 0) == b"\x01" * 4096
    assert h.pread(4096, 0) == b"\x02" * 4096
    s.shutdown()
    h.shutdown()
    r = run(["qemu-io", "-f", "raw", "-c", "write 0 4k", gw.uri("sv:s1")], check=False)
    assert r.returncode != 0 or "wrote" not in r.stdout


def test_clone_and_revert_contents(gw, tmp_path):
    gw.create("base", 8 * MiB)
    src = random_file(tmp_path / "src.raw", 8 * MiB, seed=3)
    run(["nbdcopy", str(src), gw.uri("base")])
    assert gw.api("POST", "/v1/volumes/base/snapshots", {"name": "snap"})[0] == 201
    # Clone from the snapshot, larger than the source.
    st, js = gw.api("POST", "/v1/volumes", {"name": "clone", "size": 12 * MiB,
                                             "source": {"volume": "base", "snapshot": "snap"}})
    assert st == 201, js
    assert js["size"] == 12 * MiB
    # Clone from the volume itself.
    st, js = gw.api("POST", "/v1/volumes", {"name": "clone2", "size": 8 * MiB, "source": {"volume": "base"}})
    assert st == 201, js
    # Change the origin after the clones; clones must not see it.
    h = connect(gw, "base")
    h.pwrite(b"\xee" * MiB, 0)
    h.flush()
    h.shutdown()
    c = connect(gw, "clone")
    assert c.get_size() == 12 * MiB
    assert c.pread(4 * MiB, 8 * MiB) == b"\0" * (4 * MiB)
    c.pwrite(b"\x77" * 4096, 0)  # writing the clone leaves the origin alone
    c.shutdown()
    out = tmp_path / "clone2.raw"
    run(["nbdcopy", gw.uri("clone2"), str(out)])
    assert sha256(out) == sha256(src)
    # Revert the origin to the snapshot (new API), then check every byte.
    st, js = gw.api("POST", "/v1/volumes/base/revert", {"snapshot": "snap"})
    assert st == 200, js
    back = tmp_path / "base.raw"
    run(["nbdcopy", gw.uri("base"), str(back)])
    assert sha256(back) == sha256(src)
    # And through the original system's path.
    h = connect(gw, "base")
    h.pwrite(b"\x99" * 4096, 0)
    h.shutdown()
    st, js = gw.api("POST", "/region/pool/vol/snapshot?volname=base&snapname=snap")
    assert st == 200, js
    h = connect(gw, "base")
    with open(src, "rb") as f:
        assert h.pread(4096, 0) == f.read(4096)
    h.shutdown()


def test_many_requests_in_flight_on_one_connection(gw):
    gw.create("qd", 16 * MiB)
    h = connect(gw, "qd")
    bufs = {}
    for i in range(64):
        # mixed sizes: small ones run inline, 512 KiB ones on the worker pool
        data = bytes([i]) * (512 * 1024) if i % 4 == 0 else os.urandom(8192)
        bufs[i] = data
        h.aio_pwrite(data, i * 131072 if i % 4 else (i // 4) * 524288 + 8 * MiB)
    assert h.aio_in_flight() > 1
    while h.aio_in_flight() > 0:
        h.poll(1)
    offs = {i: (i * 131072 if i % 4 else (i // 4) * 524288 + 8 * MiB) for i in bufs}
    rbufs = [(nbd.Buffer(len(bufs[i])), i) for i in range(64)]
    for b, i in rbufs:
        h.aio_pread(b, offs[i])
    while h.aio_in_flight() > 0:
        h.poll(1)
    for b, i in rbufs:
        assert bytes(b.to_bytearray()) == bufs[i], i
    h.shutdown()


def test_simple_replies_without_structured_negotiation(gw):
    gw.create("simple", MiB)
    h = connect(gw, "simple", structured=False)
    assert not h.get_structured_replies_negotiated()
    assert not h.can_meta_context("base:allocation")
    data = os.urandom(300 * 1024)  # larger than the inline limit: goes through the worker pool
    h.pwrite(data, 0)
    assert h.pread(len(data), 0) == data
    h.set_strict_mode(0)
    with pytest.raises(nbd.Error):
        h.pread(4096, MiB)
    assert h.pread(4096, 0) == data[:4096]
    h.shutdown()
