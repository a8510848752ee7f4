"""Gateway errors end to end through iSCSI (issue 3: "a retryable error burst
is absorbed"). ferry-gateway's fault injection (`--fault-injection on`,
`POST /v1/faults`) makes NBD requests fail with a chosen error without
executing them, while real initiators drive ferry-target: ferry-iscsi-verify
(libiscsi, every acknowledged write remembered and checked) and qemu-io.

- a burst of retryable errors (EAGAIN on reads and writes) is retried on the
  current gateway: no initiator-visible error, no switch, counters clean;
- EIO (retried, then final) reaches the initiator as CHECK CONDITION with
  MEDIUM ERROR sense; a failed write does not land; other LUNs are unaffected;
- retryable errors that outlast `readretry`/`writeretry` are reported.
"""
import ctypes
import ctypes.util
import time

from ferrytest import binary, http, wait_port
from tcluster import IQN_PREFIX, TOKEN, Gateway, Target, Verifier, poll, run

MiB = 1 << 20


class _Sense(ctypes.Structure):
    # struct scsi_sense (libiscsi's scsi-lowlevel.h), leading fields.
    _fields_ = [("error_type", ctypes.c_ubyte), ("key", ctypes.c_int), ("ascq", ctypes.c_int)]


class _Task(ctypes.Structure):
    # struct scsi_task (libiscsi's scsi-lowlevel.h), up to its sense data.
    _fields_ = [("status", ctypes.c_int), ("cdb_size", ctypes.c_int), ("xfer_dir", ctypes.c_int),
                ("expxferlen", ctypes.c_int), ("cdb", ctypes.c_ubyte * 16), ("residual_status", ctypes.c_int),
                ("residual", ctypes.c_size_t), ("sense", _Sense)]


class IscsiSession:
    """One libiscsi session to a LUN: READ(16)/WRITE(16) returning
    (SCSI status, sense key, ASC<<8|ASCQ), so tests can check the sense data
    that qemu-io and the verifier do not show (libiscsi has no name for
    MEDIUM ERROR)."""

    def __init__(self, portal, iqn, lun, initiator="iqn.2026-11.io.ferry.test:retry"):
        lib = ctypes.CDLL(ctypes.util.find_library("iscsi") or "libiscsi.so.7")
        lib.iscsi_create_context.restype = ctypes.c_void_p
        lib.iscsi_get_error.restype = ctypes.c_char_p
        lib.iscsi_get_error.argtypes = [ctypes.c_void_p]
        for f in ("iscsi_set_targetname", "iscsi_full_connect_sync"):
            getattr(lib, f).argtypes = [ctypes.c_void_p, ctypes.c_char_p] + ([ctypes.c_int] if "connect" in f else [])
        lib.iscsi_set_session_type.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.iscsi_set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.iscsi_read16_sync.restype = ctypes.POINTER(_Task)
        lib.iscsi_read16_sync.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32] + \
            [ctypes.c_int] * 6
        lib.iscsi_write16_sync.restype = ctypes.POINTER(_Task)
        lib.iscsi_write16_sync.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_char_p,
                                           ctypes.c_uint32] + [ctypes.c_int] * 6
        lib.scsi_free_scsi_task.argtypes = [ctypes.POINTER(_Task)]
        lib.iscsi_logout_sync.argtypes = [ctypes.c_void_p]
        lib.iscsi_destroy_context.argtypes = [ctypes.c_void_p]
        self.lib, self.lun = lib, lun
        self.ctx = lib.iscsi_create_context(initiator.encode())
        assert self.ctx
        lib.iscsi_set_targetname(self.ctx, iqn.encode())
        lib.iscsi_set_session_type(self.ctx, 2)  # ISCSI_SESSION_NORMAL
        lib.iscsi_set_timeout(self.ctx, 60)
        if lib.iscsi_full_connect_sync(self.ctx, portal.encode(), lun) != 0:
            err = lib.iscsi_get_error(self.ctx)
            self.close()
            raise AssertionError(f"libiscsi login failed: {err}")

    def _run(self, issue):
        for _ in range(8):  # a UNIT ATTENTION is retried, as initiators do
            t = issue()
            assert t, self.lib.iscsi_get_error(self.ctx)
            r = (t.contents.status, t.contents.sense.key, t.contents.sense.ascq & 0xFFFF)
            self.lib.scsi_free_scsi_task(t)
            if r[0] != 2 or r[1] != 6:
                return r
        raise AssertionError("unit attention after 8 tries")

    def read(self, lba, blocks):
        return self._run(lambda: self.lib.iscsi_read16_sync(self.ctx, self.lun, lba, blocks * 512, 512,
                                                            0, 0, 0, 0, 0))

    def write(self, lba, data):
        return self._run(lambda: self.lib.iscsi_write16_sync(self.ctx, self.lun, lba, data, len(data), 512,
                                                             0, 0, 0, 0, 0))

    def close(self):
        if self.ctx:
            self.lib.iscsi_logout_sync(self.ctx)
            self.lib.iscsi_destroy_context(self.ctx)
            self.ctx = None


GOOD = (0, 0, 0)
MEDIUM_ERROR_READ = (2, 3, 0x1100)   # CHECK CONDITION, MEDIUM ERROR, UNRECOVERED READ ERROR
MEDIUM_ERROR_WRITE = (2, 3, 0x0C00)  # CHECK CONDITION, MEDIUM ERROR, WRITE ERROR


class FaultGateway(Gateway):
    """A ferry-gateway with fault injection on, plus its /v1/faults calls."""

    def start(self, fault_injection=True):
        argv = [binary("ferry-gateway"), "--data-dir", self.data_dir, "--nbd-listen", self.nbd,
                "--admin-listen", f"127.0.0.1:{self.admin_port}", "--token", TOKEN, "--log-level", "info"]
        if fault_injection:
            argv += ["--fault-injection", "on"]
        self.proc = self.procs.start(self.name, argv)
        wait_port("127.0.0.1", self.admin_port, timeout=15)
        wait_port("127.0.0.1", self.nbd_port, timeout=15)
        return self

    def arm(self, **rule):
        st, body = http("POST", self.admin + "/v1/faults", rule, token=TOKEN)
        assert st == 201, body
        assert body["active"] and body["injected"] == 0, body
        return body["id"]

    def rule(self, rid):
        st, body = http("GET", self.admin + "/v1/faults")
        assert st == 200, body
        return next(r for r in body["faults"] if r["id"] == rid)

    def wait_spent(self, rid, timeout=60):
        """Waits until the rule has injected all its errors; returns it."""
        return poll(lambda: (lambda r: r if not r["active"] else None)(self.rule(rid)), timeout=timeout,
                    what=f"fault rule {rid} used up")

    def clear(self):
        st, body = http("DELETE", self.admin + "/v1/faults", token=TOKEN)
        assert st == 200, body


def make(procs, tmp_path, volumes=("vol1",), n=2):
    gws = [FaultGateway(procs, str(tmp_path / "data"), f"gw{i + 1}").start() for i in range(n)]
    for v in volumes:
        gws[0].create_volume(v, 64 * MiB)
    tgt = Target(procs, str(tmp_path / "state")).start()
    iqn = f"{IQN_PREFIX}:retry"
    tgt.create_target(iqn, open=True)
    luns = [tgt.add_lun(iqn, v, gws) for v in volumes]
    return gws, tgt, iqn, luns


def ok(res, v):
    assert res["errors"] == 0 and res["mismatches"] == 0 and res["stale"] == 0, (res, v.stderr())


def wait_ops(tgt, vol, more, what):
    start = int(tgt.status(vol)["ioTotal"])
    poll(lambda: int(tgt.status(vol)["ioTotal"]) >= start + more, timeout=60, what=what)


def qemu_io(url, *cmds, timeout=60):
    argv = ["qemu-io", "-f", "raw"]
    for c in cmds:
        argv += ["-c", c]
    return run(argv + [url], timeout=timeout, check=False)


def assert_io_ok(p):
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "failed" not in out and "error" not in out.lower(), out


def assert_io_error(p):
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "Input/output error" in out, (p.returncode, out)


def test_fault_api_is_off_by_default_and_validates(procs, tmp_path):
    on = FaultGateway(procs, str(tmp_path / "d1"), "gw-on").start()
    off = FaultGateway(procs, str(tmp_path / "d2"), "gw-off").start(fault_injection=False)
    st, body = http("POST", off.admin + "/v1/faults", {"op": "read", "errno": "EIO", "count": 1}, token=TOKEN)
    assert st == 403 and "--fault-injection on" in body["error"], body
    assert http("GET", off.admin + "/v1/faults")[0] == 403
    # Token required to arm or clear.
    assert http("POST", on.admin + "/v1/faults", {"op": "read", "errno": "EIO", "count": 1})[0] == 401
    assert http("DELETE", on.admin + "/v1/faults")[0] == 401
    for bad in ({"op": "read", "errno": "EIO"},                       # neither count nor duration
                {"op": "read", "errno": "EWHAT", "count": 1},
                {"op": "sometimes", "errno": "EIO", "count": 1},
                {"op": "read", "count": 1},
                {"op": "read", "errno": "EIO", "count": -1},
                {"op": "read", "errno": "EIO", "count": 1, "every": 0},
                {"op": "read", "errno": "EIO", "duration_ms": 0},
                {"op": "read", "errno": "EIO", "count": 1, "colour": "red"},
                [1, 2]):
        st, body = http("POST", on.admin + "/v1/faults", bad, token=TOKEN)
        assert st == 400 and "error" in body, (bad, st, body)
    st, body = http("GET", on.admin + "/v1/faults")
    assert st == 200 and body == {"faults": []}, body  # nothing was armed by bad input
    rid = on.arm(volume="v", op="write", errno="ENOSPC", count=2, every=3, duration_ms=60000)
    r = on.rule(rid)
    assert (r["volume"], r["op"], r["errno"], r["error_value"], r["count"], r["every"]) == \
        ("v", "write", "ENOSPC", 28, 2, 3), r
    assert 0 < r["remaining_ms"] <= 60000, r
    assert http("DELETE", on.admin + "/v1/faults/999", token=TOKEN)[0] == 404
    st, body = http("DELETE", on.admin + f"/v1/faults/{rid}", token=TOKEN)
    assert st == 200 and body == {"deleted": rid}, body
    assert http("GET", on.admin + "/v1/faults")[1] == {"faults": []}


def test_retryable_error_burst_is_absorbed(procs, tmp_path):
    gws, tgt, iqn, luns = make(procs, tmp_path)
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, 1), threads=16, blocks=1024)
    wait_ops(tgt, "vol1", 1000, "I/O before the burst")
    before = tgt.status("vol1")
    # 200 EAGAIN replies (every other request fails, reads and writes alike).
    t0 = time.time()
    rids = [gws[0].arm(volume="vol1", op=op, errno="EAGAIN", count=100, every=2) for op in ("read", "write")]
    spent = [gws[0].wait_spent(r) for r in rids]
    burst_s = time.time() - t0
    assert [r["injected"] for r in spent] == [100, 100], spent
    wait_ops(tgt, "vol1", 1000, "I/O after the burst")
    res = v.result()
    ok(res, v)
    row = tgt.status("vol1")
    # Absorbed: retried on the same gateway (no switch, no epoch change); not
    # counted as errors (readError/writeError count what the caller saw).
    assert row["status"] == "0" and row["readError"] == "0" and row["writeError"] == "0", row
    assert row["currentGw"] == gws[0].nbd and row["epoch"] == before["epoch"], (before, row)
    assert int(row["ioTotal"]) > int(before["ioTotal"]) + 2000, row
    print(f"burst: 200 EAGAIN in {burst_s:.2f} s; verifier {res}")


def test_eshutdown_switches_without_error(procs, tmp_path):
    # ESHUTDOWN means "this gateway is going away": a switch, like a dead
    # connection, with the request re-sent to the next gateway.
    gws, tgt, iqn, luns = make(procs, tmp_path)
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, 1), threads=4, blocks=512)
    wait_ops(tgt, "vol1", 1000, "I/O on gw1")
    before = tgt.status("vol1")
    rid = gws[0].arm(volume="vol1", op="any", errno="ESHUTDOWN", count=1)
    row = poll(lambda: (lambda r: r if r["currentGw"] == gws[1].nbd and r["status"] == "0" else None)(
        tgt.status("vol1")), timeout=30, what="switch to gw2 after ESHUTDOWN")
    assert gws[0].rule(rid)["injected"] == 1
    assert int(row["epoch"]) > int(before["epoch"]), (before, row)
    wait_ops(tgt, "vol1", 1000, "I/O on gw2")
    res = v.result()
    ok(res, v)
    row = tgt.status("vol1")
    assert row["readError"] == "0" and row["writeError"] == "0", row


def test_eio_reaches_initiator_as_medium_error(procs, tmp_path):
    gws, tgt, iqn, luns = make(procs, tmp_path, volumes=("vol1", "vol2"))
    url1, url2 = tgt.url(iqn, luns[0]["lun"]), tgt.url(iqn, luns[1]["lun"])
    # vol1 carries verified I/O throughout: it must not notice vol2's errors.
    v1 = Verifier(procs, str(tmp_path), url1, name="v1", threads=2, blocks=256)
    assert_io_ok(qemu_io(url2, "write -P 0x5a 1M 64k"))
    epoch2 = tgt.status("vol2")["epoch"]
    s = IscsiSession(tgt.portal, iqn, luns[1]["lun"])
    try:
        # EIO on every attempt (3 in all, docs/failover.md): CHECK CONDITION,
        # MEDIUM ERROR; the next read of the same blocks is fine.
        rid = gws[0].arm(volume="vol2", op="read", errno="EIO", count=3)
        assert s.read(2048, 8) == MEDIUM_ERROR_READ
        assert gws[0].rule(rid)["injected"] == 3
        assert s.read(2048, 8) == GOOD
        # Fewer EIOs than attempts: retried, and the initiator sees nothing.
        rid = gws[0].arm(volume="vol2", op="read", errno="EIO", count=2)
        assert s.read(2048, 8) == GOOD
        assert gws[0].rule(rid)["injected"] == 2
        rid = gws[0].arm(volume="vol2", op="write", errno="EIO", count=3)
        assert s.write(2048, b"\xa5" * 4096) == MEDIUM_ERROR_WRITE
        assert gws[0].rule(rid)["injected"] == 3
        # Other non-retryable errors: one attempt each, their own sense.
        rid = gws[0].arm(volume="vol2", op="write", errno="ENOSPC", count=5)
        assert s.write(2048, b"\xa5" * 4096) == (2, 7, 0x2707)  # DATA PROTECT, SPACE ALLOCATION FAILED
        assert gws[0].rule(rid)["injected"] == 1
        gws[0].clear()
        rid = gws[0].arm(volume="vol2", op="read", errno="EINVAL", count=5)
        assert s.read(2048, 8) == (2, 5, 0x2100)  # ILLEGAL REQUEST, LBA OUT OF RANGE
        assert gws[0].rule(rid)["injected"] == 1
        gws[0].clear()
    finally:
        s.close()
    assert_io_ok(qemu_io(url2, "read -P 0x5a 1M 64k"))  # no failed write landed

    # qemu's iSCSI driver: EIO for the read and for the write; old bytes stay.
    rid = gws[0].arm(volume="vol2", op="read", errno="EIO", count=3)
    assert_io_error(qemu_io(url2, "read 1M 4k"))
    assert gws[0].rule(rid)["injected"] == 3
    rid = gws[0].arm(volume="vol2", op="write", errno="EIO", count=3)
    assert_io_error(qemu_io(url2, "write -P 0xa5 1M 4k"))
    assert gws[0].rule(rid)["injected"] == 3
    assert_io_ok(qemu_io(url2, "read -P 0x5a 1M 64k"))

    row2 = tgt.status("vol2")
    assert (row2["readError"], row2["writeError"], row2["status"]) == ("3", "3", "0"), row2
    assert row2["currentGw"] == gws[0].nbd and row2["epoch"] == epoch2, row2  # EIO is no reason to switch
    res1 = v1.result()
    ok(res1, v1)
    row1 = tgt.status("vol1")
    assert (row1["readError"], row1["writeError"], row1["status"]) == ("0", "0", "0"), row1


def timed(fn):
    t0 = time.time()
    r = fn()
    return r, time.time() - t0


def test_retryable_errors_past_retry_window_are_reported(procs, tmp_path):
    gws, tgt, iqn, luns = make(procs, tmp_path, n=1)
    url = tgt.url(iqn, luns[0]["lun"])
    tgt.set_timeout("readretry", 3)
    tgt.set_timeout("writeretry", 3)
    assert_io_ok(qemu_io(url, "write -P 0x11 0 64k"))

    # EAGAIN for longer than the window: retried with back-off for 3 s, then
    # CHECK CONDITION / MEDIUM ERROR (libiscsi) and EIO (qemu).
    s = IscsiSession(tgt.portal, iqn, luns[0]["lun"])
    try:
        assert s.read(0, 8) == GOOD
        rid = gws[0].arm(volume="vol1", op="read", errno="EAGAIN", duration_ms=60000)
        r, took = timed(lambda: s.read(0, 8))
        assert r == MEDIUM_ERROR_READ and 2.8 <= took < 20, (r, took)
        assert gws[0].rule(rid)["injected"] >= 3  # retried, not failed at once
        rid2 = gws[0].arm(volume="vol1", op="write", errno="EAGAIN", duration_ms=60000)
        r, took = timed(lambda: s.write(0, b"\x22" * 4096))
        assert r == MEDIUM_ERROR_WRITE and 2.8 <= took < 20, (r, took)
        assert gws[0].rule(rid2)["injected"] >= 3
        p, took = timed(lambda: qemu_io(url, "read 0 4k"))
        assert_io_error(p)
        assert 2.8 <= took < 20, took
        p, took = timed(lambda: qemu_io(url, "write -P 0x22 0 4k"))
        assert_io_error(p)
        assert 2.8 <= took < 20, took
        # Once the errors stop, the same session reads again.
        gws[0].clear()
        assert s.read(0, 8) == GOOD
    finally:
        s.close()
    assert_io_ok(qemu_io(url, "read -P 0x11 0 64k"))  # neither failed write landed

    row = tgt.status("vol1")
    assert (row["readError"], row["writeError"], row["status"]) == ("2", "2", "0"), row
    assert_io_ok(qemu_io(url, "write -P 0x33 0 4k", "read -P 0x33 0 4k"))
