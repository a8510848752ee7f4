"""A ferry-target restarted without any backend serves every LUN it had,
with its data — even when the gateways come back only after it."""
import signal
import subprocess

from tcluster import IQN_PREFIX, Gateway, Target, poll, run

MiB = 1 << 20


def write_patterns(url, pattern):
    r = run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} 0 1M", "-c", f"write -P {pattern} 33M 1M",
             url]).stdout
    assert "wrote 1048576/1048576" in r, r


def check_patterns(url, pattern):
    r = run(["qemu-io", "-f", "raw", "-c", f"read -P {pattern} 0 1M", "-c", f"read -P {pattern} 33M 1M",
             url]).stdout
    assert "Pattern verification failed" not in r and r.count("read 1048576/1048576") == 2, r


def make(procs, tmp_path):
    gws = [Gateway(procs, str(tmp_path / "data"), f"gw{i}").start() for i in (1, 2)]
    for v in ("vol1", "vol2", "vol3"):
        gws[0].create_volume(v, 64 * MiB)
    tgt = Target(procs, str(tmp_path / "state")).start()
    a, b = f"{IQN_PREFIX}:a", f"{IQN_PREFIX}:b"
    tgt.create_target(a, open=True)
    tgt.create_target(b, acl={"initiators": ["iqn.2026-11.io.ferry.test:b"]},
                      chap={"user": "bob", "secret": "bob-secret-123"})
    tgt.add_lun(a, "vol1", gws)
    tgt.add_lun(a, "vol2", gws, lun=7, switchable=False)
    tgt.add_lun(b, "vol3", gws[::-1])
    return gws, tgt, a, b


def snapshot(tgt):
    st, body = tgt.call("GET", "/v1/targets")
    assert st == 200
    return body


def test_restart_restores_luns_and_data(procs, tmp_path):
    gws, tgt, a, b = make(procs, tmp_path)
    write_patterns(tgt.url(a, 1), "0x21")
    write_patterns(tgt.url(a, 7), "0x27")
    tgt.set_timeout("read", 30)
    before = snapshot(tgt)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # clean stop, then a crash
        tgt.stop(sig)
        tgt.start()
        assert snapshot(tgt) == before
        assert tgt.call("GET", "/v1/timeouts")[1]["read"] == 30
        check_patterns(tgt.url(a, 1), "0x21")
        check_patterns(tgt.url(a, 7), "0x27")
        # The CHAP target is back with its ACL and secret.
        url = f"iscsi://bob%bob-secret-123@{tgt.portal}/{b}/1"
        p = run(["iscsi-readcapacity16", "-i", "iqn.2026-11.io.ferry.test:b", url], check=False)
        assert p.returncode == 0, p.stderr
        assert run(["iscsi-readcapacity16", "-i", "iqn.2026-11.io.ferry.test:b", tgt.url(b, 1)],
                   check=False).returncode != 0


def test_restart_with_gateways_down_then_back(procs, tmp_path):
    gws, tgt, a, b = make(procs, tmp_path)
    write_patterns(tgt.url(a, 1), "0x31")
    tgt.set_timeout("reconnect", 10)  # persisted: applies after the restart too
    before = snapshot(tgt)
    tgt.stop()
    for g in gws:
        g.kill()
    tgt.start()
    # Every LUN is configured and visible, in fault status, without any gateway.
    assert snapshot(tgt) == before
    st, body = tgt.call("GET", "/v1/status")
    assert sorted(r["volumeName"] for r in body["volumes"]) == ["vol1", "vol2", "vol3"]
    poll(lambda: [r["status"] for r in tgt.call("GET", "/v1/status")[1]["volumes"]] == ["2", "2", "2"],
         timeout=20, what="fault status (2) with no gateway")
    out = run(["iscsi-readcapacity16", tgt.url(a, 1)]).stdout  # size known from the state file
    assert f"Total size:{64 * MiB}" in out
    # I/O issued now is held, and completes once a gateway is back.
    reader = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "read -P 0x31 0 1M", tgt.url(a, 1)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.procs.append(reader)
    poll(lambda: tgt.status("vol1")["ioCnt"] != "0", timeout=20, what="read held in the target")
    assert reader.poll() is None
    for g in gws:
        g.start()
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0 and "Pattern verification failed" not in out and "read 1048576/1048576" in out, out
    poll(lambda: all(r["status"] == "0" for r in tgt.call("GET", "/v1/status")[1]["volumes"]),
         timeout=40, what="all volumes back to normal")
    check_patterns(tgt.url(a, 1), "0x31")
