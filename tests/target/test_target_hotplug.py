"""Adding and removing LUNs while another LUN of the same target carries
verifying I/O: no error, no mismatch, no pause."""
from tcluster import IQN_PREFIX, Gateway, Target, Verifier, run

MiB = 1 << 20


def test_add_remove_lun_under_io(procs, tmp_path):
    gw = Gateway(procs, str(tmp_path / "data"), "gw1").start()
    for v in ("busy", "p1", "p2", "p3"):
        gw.create_volume(v, 64 * MiB)
    tgt = Target(procs, str(tmp_path / "state")).start()
    iqn = f"{IQN_PREFIX}:hot"
    tgt.create_target(iqn, open=True)
    tgt.add_lun(iqn, "busy", [gw])
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, 1), threads=4, blocks=1024)
    base = tgt.status("busy")["ioTotal"]
    for round_ in range(5):
        for n, vol in enumerate(("p1", "p2", "p3"), start=2):
            tgt.add_lun(iqn, vol, [gw], lun=n)
        out = run(["iscsi-readcapacity16", tgt.url(iqn, 3)]).stdout
        assert f"Total size:{64 * MiB}" in out
        for n in (2, 3, 4):
            st, body = tgt.call("DELETE", f"/v1/targets/{iqn}/luns/{n}")
            assert st == 200, body
    res = v.result()
    assert res["errors"] == 0 and res["mismatches"] == 0, (res, v.stderr())
    assert res["run_ops"] > 1000, res
    # REPORTED LUNS DATA HAS CHANGED reached the busy LUN's initiator and was retried, not failed.
    assert res["unit_attentions"] > 0, res
    # No pause: the longest single I/O on the busy LUN stayed short (a loaded
    # 2-core machine included); a paused LUN would show seconds.
    assert res["max_latency_ms"] < 1000, res
    assert int(tgt.status("busy")["ioTotal"]) > int(base)
    st, t = tgt.call("GET", f"/v1/targets/{iqn}")
    assert [l["lun"] for l in t["luns"]] == [1]
