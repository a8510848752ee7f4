"""Fencing through NBD export names: opening VOL@E raises the volume's epoch,
after which no write through an older-epoch connection lands — including
writes already queued in the gateway. Checked byte by byte."""
import errno
import threading

import nbd
import pytest

from gateway_helpers import connect, start_gateway

MiB = 1 << 20
CH = 65536  # the tests' chunk size


def is_eperm(e):
    return e.errno == errno.EPERM or "EPERM" in str(e) or "not permitted" in str(e)


@pytest.fixture
def gw(procs, tmp_path):
    return start_gateway(procs, tmp_path / "data")


def test_newer_epoch_fences_older_connection(gw):
    gw.create("fv", 64 * MiB)
    a = connect(gw, "fv@1")
    assert gw.api("GET", "/v1/volumes/fv")[1]["epoch"] == 1
    a.pwrite(b"A" * CH, 0)
    a.flush()

    # Queue many writes on A without waiting, and open B at epoch 2 meanwhile.
    results = {}
    n = 48
    def done(i):
        def cb(err):
            results[i] = err.value
            return 1
        return cb
    bufs = [nbd.Buffer.from_bytearray(bytearray(b"Q" * MiB)) for _ in range(n)]
    for i in range(n):
        a.aio_pwrite(bufs[i], MiB + i * MiB, completion=done(i))
    b_holder = {}
    t = threading.Thread(target=lambda: b_holder.setdefault("b", connect(gw, "fv@2")))
    t.start()
    while a.aio_in_flight() > 0:
        a.poll(1)
    t.join(30)
    b = b_holder["b"]
    assert not b.is_read_only()
    assert gw.api("GET", "/v1/volumes/fv")[1]["epoch"] == 2

    # From now on every write through A fails with EPERM and changes nothing.
    with pytest.raises(nbd.Error) as e:
        a.pwrite(b"X" * CH, 0)
    assert is_eperm(e.value), e.value
    with pytest.raises(nbd.Error) as e:
        a.zero(CH, 0)
    assert is_eperm(e.value)
    with pytest.raises(nbd.Error) as e:
        a.trim(CH, 0)
    assert is_eperm(e.value)
    assert b.pread(CH, 0) == b"A" * CH
    assert a.pread(CH, 0) == b"A" * CH  # reads still work for the fenced writer

    # Each queued write either landed whole (acknowledged) or not at all (failed).
    ok = failed = 0
    for i in range(n):
        got = b.pread(MiB, MiB + i * MiB)
        assert i in results
        if results[i] == 0:
            assert got == b"Q" * MiB, i
            ok += 1
        else:
            assert results[i] == errno.EPERM, results[i]
            assert got == b"\0" * MiB, f"refused write {i} landed"
            failed += 1
    print("queued writes: acknowledged", ok, "refused", failed)
    assert ok + failed == n

    b.pwrite(b"B" * CH, 0)
    assert b.pread(CH, 0) == b"B" * CH
    a.shutdown()
    b.shutdown()


def test_connection_below_current_epoch_is_read_only(gw):
    gw.create("lo", 4 * MiB)
    st, js = gw.api("POST", "/v1/volumes/lo/fence", {"epoch": 7})
    assert st == 200 and js["epoch"] == 7
    w = connect(gw, "lo@7")
    assert not w.is_read_only()
    w.pwrite(b"W" * 4096, 0)
    for export in ("lo", "lo@6"):
        c = connect(gw, export)
        assert c.is_read_only(), export
        c.set_strict_mode(0)
        with pytest.raises(nbd.Error) as e:
            c.pwrite(b"old" * 100, 0)
        assert is_eperm(e.value)
        assert c.pread(4096, 0) == b"W" * 4096
        c.shutdown()
    # The epoch did not move back.
    assert gw.api("GET", "/v1/volumes/lo")[1]["epoch"] == 7
    w.shutdown()


def test_fence_via_admin_api_stops_open_writer(gw):
    gw.create("ad", 4 * MiB)
    a = connect(gw, "ad@3")
    a.pwrite(b"1" * 4096, 0)
    st, js = gw.api("POST", "/v1/volumes/ad/fence", {"epoch": 4})
    assert st == 200 and js["epoch"] == 4
    with pytest.raises(nbd.Error) as e:
        a.pwrite(b"2" * 4096, 0)
    assert is_eperm(e.value)
    assert a.pread(4096, 0) == b"1" * 4096
    a.shutdown()


def test_fencing_across_two_gateway_processes(procs, tmp_path):
    g1 = start_gateway(procs, tmp_path / "data", name="gw1")
    g2 = start_gateway(procs, tmp_path / "data", name="gw2")
    g1.create("xv", 4 * MiB)
    a = connect(g1, "xv@1")
    a.pwrite(b"a" * 4096, 0)
    a.flush()
    b = connect(g2, "xv@2")
    with pytest.raises(nbd.Error) as e:
        a.pwrite(b"z" * 4096, 0)
    assert is_eperm(e.value)
    assert b.pread(4096, 0) == b"a" * 4096
    b.pwrite(b"b" * 4096, 0)
    b.flush()
    assert a.pread(4096, 0) == b"b" * 4096
    assert g1.api("GET", "/v1/volumes/xv")[1]["epoch"] == 2
    assert g1.proc.poll() is None and g2.proc.poll() is None
    a.shutdown()
    b.shutdown()
