"""The target's part of live migration and evacuate (DESIGN.md), with two
ferry-target processes (127.0.0.1 and 127.0.0.2) on one gateway set:
B joins A's volume at A's gateway and epoch without fencing A and without
pausing A's I/O; A leaves without touching the gateway's metadata; a fenced
target's writes never land."""
from ferrytest import http
from tcluster import IQN_PREFIX, TOKEN, Gateway, Target, Verifier, poll, run

MiB = 1 << 20


def test_live_migration_join_and_leave(procs, tmp_path):
    gws = [Gateway(procs, str(tmp_path / "data"), f"gw{i}").start() for i in (1, 2)]
    gws[0].create_volume("vm1", 64 * MiB)
    a = Target(procs, str(tmp_path / "state-a"), name="target-a", ip="127.0.0.1").start()
    b = Target(procs, str(tmp_path / "state-b"), name="target-b", ip="127.0.0.2").start()
    iqn = f"{IQN_PREFIX}:vm1"
    a.create_target(iqn, open=True)
    lun_a = a.add_lun(iqn, "vm1", gws, epoch=4)
    assert lun_a["epoch"] == 4 and lun_a["current"] == gws[0].nbd
    # Data B will read later, outside the region A keeps writing.
    r = run(["qemu-io", "-f", "raw", "-c", "write -P 0x6d 32M 1M", a.url(iqn, 1)]).stdout
    assert "wrote 1048576/1048576" in r
    va = Verifier(procs, str(tmp_path), a.url(iqn, 1), name="va", threads=2, blocks=1024)

    # 1. add_lun on B: A's current gateway, A's epoch, switchable off on both.
    b.create_target(iqn, open=True)
    lun_b = b.add_lun(iqn, "vm1", gws, current=lun_a["current"], epoch=lun_a["epoch"], switchable=False)
    assert lun_b["epoch"] == 4 and lun_b["current"] == gws[0].nbd
    assert a.call("POST", "/v1/volumes/vm1/switchable", {"switchable": False})[0] == 200
    st, info = http("GET", gws[0].admin + "/v1/volumes/vm1")
    assert info["epoch"] == 4, info  # joining did not raise the epoch: A is not fenced
    r = run(["qemu-io", "-f", "raw", "-c", "read -P 0x6d 32M 1M", b.url(iqn, 1)]).stdout
    assert "Pattern verification failed" not in r and "read 1048576/1048576" in r, r
    a_total = int(a.status("vm1")["ioTotal"])
    poll(lambda: int(a.status("vm1")["ioTotal"]) > a_total + 1000, what="A's I/O continues")

    # 3. del_lun on A: A drops its LUN; B gets switchable back.
    res = va.result()
    assert res["errors"] == 0 and res["mismatches"] == 0, (res, va.stderr())
    assert res["max_latency_ms"] < 1000, res  # no pause while B joined
    assert a.call("DELETE", f"/v1/targets/{iqn}/luns/1")[0] == 200
    assert b.call("POST", "/v1/volumes/vm1/switchable", {"switchable": True})[0] == 200
    st, info = http("GET", gws[0].admin + "/v1/volumes/vm1")
    assert st == 200 and info["epoch"] == 4 and info["size"] == 64 * MiB, info  # metadata untouched
    vb = Verifier(procs, str(tmp_path), b.url(iqn, 1), name="vb", threads=2, blocks=256)
    res = vb.result()
    assert res["errors"] == 0 and res["mismatches"] == 0, (res, vb.stderr())
    row = b.status("vm1")
    assert row["switchable"] == "1" and row["iqn"] == iqn


def test_evacuate_fenced_target_never_lands_writes(procs, tmp_path):
    gw = Gateway(procs, str(tmp_path / "data"), "gw1").start()
    gw.create_volume("vm2", 64 * MiB)
    a = Target(procs, str(tmp_path / "state-a"), name="target-a", ip="127.0.0.1").start()
    b = Target(procs, str(tmp_path / "state-b"), name="target-b", ip="127.0.0.2").start()
    iqn = f"{IQN_PREFIX}:vm2"
    a.create_target(iqn, open=True)
    a.add_lun(iqn, "vm2", [gw], epoch=2)
    r = run(["qemu-io", "-f", "raw", "-c", "write -P 0x01 0 64k", a.url(iqn, 1)]).stdout
    assert "wrote 65536/65536" in r
    # The backend fences A (A is presumed dead) before B gets the LUN.
    st, body = http("POST", gw.admin + "/v1/volumes/vm2/fence", {"epoch": 3}, token=TOKEN)
    assert st == 200 and body["epoch"] == 3, body
    b.create_target(iqn, open=True)
    assert b.add_lun(iqn, "vm2", [gw], epoch=3)["epoch"] == 3
    r = run(["qemu-io", "-f", "raw", "-c", "write -P 0x03 0 64k", b.url(iqn, 1)]).stdout
    assert "wrote 65536/65536" in r
    # A was not dead after all: its writes are refused, never land.
    p = run(["qemu-io", "-f", "raw", "-c", "write -P 0x02 0 64k", a.url(iqn, 1)], check=False)
    assert "wrote 65536/65536" not in p.stdout, p.stdout
    r = run(["qemu-io", "-f", "raw", "-c", "read -P 0x03 0 64k", b.url(iqn, 1)]).stdout
    assert "Pattern verification failed" not in r and "read 65536/65536" in r, r
    row = a.status("vm2")
    assert int(row["writeError"]) >= 1, row
    # A did not fight back by raising the epoch (that would fence B).
    assert http("GET", gw.admin + "/v1/volumes/vm2")[1]["epoch"] == 3
    assert b.status("vm2")["epoch"] == "3"
    r = run(["qemu-io", "-f", "raw", "-c", "write -P 0x04 0 64k", b.url(iqn, 1)]).stdout
    assert "wrote 65536/65536" in r
