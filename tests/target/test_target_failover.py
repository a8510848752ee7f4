"""Gateway failover end to end through iSCSI, with a continuous verifying
writer/reader (every acknowledged write remembered and checked afterwards):
kill -9, SIGSTOP (hung gateway, fencing of its stale writes), all gateways
down, fail-back after `recovery`, and switchable=0."""
import signal
import time

from ferrytest import http
from tcluster import IQN_PREFIX, Gateway, Target, Verifier, poll

MiB = 1 << 20


def make(procs, tmp_path, n=2, **lun_kw):
    gws = [Gateway(procs, str(tmp_path / "data"), f"gw{i + 1}").start() for i in range(n)]
    gws[0].create_volume("vol1", 64 * MiB)
    tgt = Target(procs, str(tmp_path / "state")).start()
    iqn = f"{IQN_PREFIX}:fo"
    tgt.create_target(iqn, open=True)
    lun = tgt.add_lun(iqn, "vol1", gws, **lun_kw)
    return gws, tgt, iqn, lun


def ok(res, v):
    assert res["errors"] == 0 and res["mismatches"] == 0 and res["stale"] == 0, (res, v.stderr())


def wait_ops(tgt, more, what):
    """Waits until the volume completed `more` further requests (I/O is flowing)."""
    start = int(tgt.status("vol1")["ioTotal"])
    poll(lambda: int(tgt.status("vol1")["ioTotal"]) >= start + more, timeout=60, what=what)


def test_kill9_current_gateway(procs, tmp_path):
    gws, tgt, iqn, lun = make(procs, tmp_path)
    assert lun["current"] == gws[0].nbd
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, 1), threads=4, blocks=2048)
    wait_ops(tgt, 2000, "I/O before the kill")
    gws[0].kill()
    row = poll(lambda: (lambda r: r if r["currentGw"] == gws[1].nbd and r["status"] == "0" else None)(
        tgt.status("vol1")), timeout=20, what="switch to gw2")
    assert int(row["epoch"]) > lun["epoch"]
    wait_ops(tgt, 2000, "I/O after the switch")
    res = v.result()
    ok(res, v)
    # I/O resumed in well under a second after the kill.
    assert res["max_latency_ms"] < 1000, res
    # The switch is persisted: current gateway and epoch survive a restart.
    st, t = tgt.call("GET", f"/v1/targets/{iqn}")
    assert t["luns"][0]["current"] == gws[1].nbd
    tgt.stop()
    tgt.start()
    st, t2 = tgt.call("GET", f"/v1/targets/{iqn}")
    assert t2["luns"][0]["current"] == gws[1].nbd
    assert t2["luns"][0]["epoch"] == t["luns"][0]["epoch"]


def test_sigstop_switches_after_timeout_and_fences_stale_writes(procs, tmp_path):
    gws, tgt, iqn, lun = make(procs, tmp_path)
    tgt.set_timeout("write", 2)
    tgt.set_timeout("read", 2)
    # A small region so every block is rewritten many times after the switch:
    # any stale write the frozen gateway lands later would show as old data.
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, 1), threads=4, blocks=64, hold_verify=True)
    wait_ops(tgt, 2000, "I/O before SIGSTOP")
    t0 = time.time()
    gws[0].kill(signal.SIGSTOP)
    poll(lambda: tgt.status("vol1")["currentGw"] == gws[1].nbd, timeout=30, what="switch after write timeout")
    switched_after = time.time() - t0
    assert switched_after >= 1.5, switched_after  # not before the timeout (2 s)
    wait_ops(tgt, 3000, "I/O on gw2")
    v.stop_io()  # writes stop; the verifier waits for the verify file before reading back
    gws[0].kill(signal.SIGCONT)
    # The woken gateway processes whatever it had queued — unless the new
    # gateway already fenced it by killing it (STONITH of a process that could
    # not be proven drained). Wait until it either serves its admin API again
    # or is gone, then read everything back.
    def awake_or_dead():
        if gws[0].proc.poll() is not None:
            return "dead"
        try:
            return "awake" if http("GET", gws[0].admin + "/healthz", timeout=2)[0] == 200 else None
        except OSError:
            return None
    poll(awake_or_dead, timeout=20, what="gw1 awake or fenced")
    st, info = http("GET", gws[1].admin + "/v1/volumes/vol1")
    assert st == 200 and info["epoch"] >= 2, info
    res = v.result()
    ok(res, v)
    assert res["verified"] == 64, res


def test_all_gateways_down_holds_io_then_resumes(procs, tmp_path):
    gws, tgt, iqn, lun = make(procs, tmp_path)
    tgt.set_timeout("reconnect", 10)
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, 1), threads=2, blocks=256)
    wait_ops(tgt, 1000, "I/O before the outage")
    for g in gws:
        g.kill()
    poll(lambda: tgt.status("vol1")["status"] == "2", timeout=20, what="fault status 2")
    poll(lambda: tgt.status("vol1")["ioCnt"] != "0", timeout=20, what="I/O held")
    held = int(tgt.status("vol1")["ioTotal"])
    assert v.proc.poll() is None  # the initiator is waiting, not failing
    for g in gws:
        g.start()
    poll(lambda: tgt.status("vol1")["status"] == "0", timeout=40, what="back to normal")
    wait_ops(tgt, 1000, "I/O after the gateways returned")
    assert int(tgt.status("vol1")["ioTotal"]) > held
    res = v.result()
    ok(res, v)


def test_failback_after_recovery(procs, tmp_path):
    gws, tgt, iqn, lun = make(procs, tmp_path)
    tgt.set_timeout("recovery", 10)
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, 1), threads=2, blocks=256)
    wait_ops(tgt, 1000, "I/O on gw1")
    gws[0].kill()
    poll(lambda: tgt.status("vol1")["currentGw"] == gws[1].nbd, timeout=20, what="switch to gw2")
    e2 = int(tgt.status("vol1")["epoch"])
    gws[0].start()
    t0 = time.time()
    poll(lambda: tgt.status("vol1")["currentGw"] == gws[0].nbd, timeout=60, what="fail-back to gw1")
    back_after = time.time() - t0
    assert back_after >= 8, back_after  # waited for `recovery` (10 s) of health first
    assert int(tgt.status("vol1")["epoch"]) > e2
    assert tgt.status("vol1")["perferGw"] == gws[0].nbd
    wait_ops(tgt, 1000, "I/O after fail-back")
    res = v.result()
    ok(res, v)


def test_switchable_off_prevents_switch_and_failback(procs, tmp_path):
    gws, tgt, iqn, lun = make(procs, tmp_path)
    tgt.set_timeout("recovery", 10)
    tgt.set_timeout("reconnect", 10)
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, 1), threads=2, blocks=256)
    wait_ops(tgt, 1000, "I/O on gw1")
    # Switch once to gw2 (switchable), then freeze the volume there.
    gws[0].kill()
    poll(lambda: tgt.status("vol1")["currentGw"] == gws[1].nbd, timeout=20, what="switch to gw2")
    st, _ = tgt.call("POST", "/v1/volumes/vol1/switchable", {"switchable": False})
    assert st == 200
    epoch = tgt.status("vol1")["epoch"]
    gws[0].start()
    # No fail-back, even well past `recovery`: observe for 15 s while I/O flows.
    end = time.time() + 15
    while time.time() < end:
        row = tgt.status("vol1")
        assert row["currentGw"] == gws[1].nbd and row["epoch"] == epoch and row["switchable"] == "0", row
        time.sleep(0.5)
    # No switch either: gw2 dies, gw1 is healthy, the volume waits for gw2.
    gws[1].kill()
    poll(lambda: tgt.status("vol1")["status"] == "2", timeout=20, what="fault, not switch")
    assert tgt.status("vol1")["currentGw"] == gws[1].nbd
    gws[1].start()
    poll(lambda: tgt.status("vol1")["status"] == "0", timeout=40, what="back on gw2")
    row = tgt.status("vol1")
    assert row["currentGw"] == gws[1].nbd and row["epoch"] == epoch, row
    wait_ops(tgt, 1000, "I/O after gw2 returned")
    res = v.result()
    ok(res, v)
