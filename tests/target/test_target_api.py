"""ferry-target admin API against the real process (and a real ferry-gateway)."""
import os
import socket
import subprocess
import urllib.request

from ferrytest import binary, free_port, http
from tcluster import IQN_PREFIX, TOKEN, Gateway, Target, poll, run

MiB = 1 << 20


def cluster(procs, tmp_path, volumes=("vol1",)):
    gw = Gateway(procs, str(tmp_path / "data"), "gw1").start()
    for v in volumes:
        gw.create_volume(v, 64 * MiB)
    tgt = Target(procs, str(tmp_path / "state")).start()
    return gw, tgt


def test_bad_flags_exit_nonzero(tmp_path):
    for argv in (["--bogus", "1"], ["--iscsi-listen", "nohost"], ["--admin-listen", "1.2.3.4:99999"],
                 ["--backend", "ftp://x"], ["--log-level", "loud"]):
        p = subprocess.run([binary("ferry-target"), "--state-dir", str(tmp_path / "s"), *argv],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 2, (argv, p.returncode, p.stderr)
        assert "ferry-target:" in p.stderr
    p = subprocess.run([binary("ferry-target"), "--help"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0 and "--iscsi-listen" in p.stdout


def test_corrupt_state_refuses_to_start(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text("{ not json")
    p = subprocess.run([binary("ferry-target"), "--state-dir", str(state),
                        "--iscsi-listen", f"127.0.0.1:{free_port()}",
                        "--admin-listen", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "state.json" in p.stderr
    assert (state / "state.json").read_text() == "{ not json"  # never overwritten


def test_healthz_and_several_portals(procs, tmp_path):
    extra_port = free_port()
    tgt = Target(procs, str(tmp_path / "state"))
    tgt.start(extra=["--iscsi-listen", f"127.0.0.1:{extra_port}"])
    st, body = http("GET", tgt.admin + "/healthz")
    assert st == 200
    assert body["status"] == "ok"
    assert body["pid"] == tgt.proc.pid
    assert body["portals"] == [tgt.portal, f"127.0.0.1:{extra_port}"]
    assert body["admin"] == f"127.0.0.1:{tgt.admin_port}"


def test_admin_api_bad_input(procs, tmp_path):
    gw, tgt = cluster(procs, tmp_path)
    iqn = f"{IQN_PREFIX}:bad"
    assert tgt.call("POST", "/v1/targets", {"iqn": iqn}, token=None)[0] == 401
    assert tgt.call("POST", "/v1/targets", {"iqn": iqn}, token="wrong")[0] == 401
    # malformed JSON, wrong types, bad names
    req = urllib.request.Request(tgt.admin + "/v1/targets", data=b"{nope", method="POST",
                                 headers={"X-Ferry-Token": TOKEN})
    try:
        urllib.request.urlopen(req, timeout=10)
        assert False, "malformed JSON accepted"
    except urllib.error.HTTPError as e:
        assert e.code == 400
        assert "error" in e.read().decode()
    for body in ({}, {"iqn": 5}, {"iqn": "not-an-iqn"}, {"iqn": iqn, "open": "yes"},
                 {"iqn": iqn, "chap": {"user": "u", "secret": "short"}},
                 {"iqn": iqn, "acl": {"addresses": ["999.1.1.1"]}}):
        st, resp = tgt.call("POST", "/v1/targets", body)
        assert st == 400, (body, st, resp)
        assert "error" in resp
    assert tgt.call("GET", "/v1/targets")[1] == {"targets": []}
    # oversize body
    with socket.create_connection(("127.0.0.1", tgt.admin_port), timeout=10) as s:
        s.sendall(("POST /v1/targets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"X-Ferry-Token: {TOKEN}\r\nContent-Length: {2 << 20}\r\n\r\n").encode())
        assert s.recv(4096).split(b"\r\n")[0].split()[1] == b"413"
    # unknown paths and methods
    assert tgt.call("GET", "/v1/nothing")[0] == 404
    assert tgt.call("PATCH", "/v1/targets")[0] == 405
    assert tgt.call("DELETE", f"/v1/targets/{iqn}")[0] == 404
    assert tgt.create_target(iqn)["tid"] == 1
    luns = f"/v1/targets/{iqn}/luns"
    for body in ({"gateways": [gw.nbd]}, {"volume": "vol1"}, {"volume": "vol1", "gateways": []},
                 {"volume": "../etc", "gateways": [gw.nbd]}, {"volume": "vol1", "gateways": ["x"]},
                 {"volume": "vol1", "gateways": [gw.nbd], "lun": 70000},
                 {"volume": "vol1", "gateways": [gw.nbd], "preferred": "127.0.0.1:1"}):
        st, resp = tgt.call("POST", luns, body)
        assert st == 400, (body, st, resp)
    # a volume no gateway serves: 503, nothing added
    st, resp = tgt.call("POST", luns, {"volume": "missing", "gateways": [gw.nbd]})
    assert st == 503, resp
    # a gateway that is down: 503
    st, resp = tgt.call("POST", luns, {"volume": "vol1", "gateways": [f"127.0.0.1:{free_port()}"]})
    assert st == 503, resp
    assert tgt.call("GET", f"/v1/targets/{iqn}")[1]["luns"] == []
    assert tgt.call("DELETE", luns + "/1")[0] == 404
    assert tgt.call("DELETE", luns + "/x")[0] == 400
    for body in ({"type": "read", "duration": 0}, {"type": "recovery", "duration": 15},
                 {"type": "reconnect", "duration": 5}, {"type": "switch", "duration": -1},
                 {"type": "nope", "duration": 5}, {"type": "read"}):
        assert tgt.call("PUT", "/v1/timeouts", body)[0] == 400, body
    assert tgt.call("GET", "/v1/timeouts")[1] == {"read": 60, "write": 60, "readretry": 86400,
                                                  "writeretry": 86400, "switch": 0, "recovery": 120,
                                                  "reconnect": 60}
    assert tgt.call("PUT", "/v1/fixedmode", {"gateway": "nohost"})[0] == 400
    assert tgt.call("POST", "/v1/volumes/vol1/resize", {})[0] == 404
    assert tgt.call("POST", "/v1/volumes/vol1/switchable", {"switchable": "no"})[0] == 400
    assert tgt.proc.poll() is None


def test_lun_lifecycle_status_sessions_resize(procs, tmp_path):
    gw, tgt = cluster(procs, tmp_path, volumes=("vol1", "vol2"))
    iqn = f"{IQN_PREFIX}:life"
    assert tgt.create_target(iqn, open=True)["tid"] == 1
    st, again = tgt.call("POST", "/v1/targets", {"iqn": iqn, "open": True})
    assert st == 200 and again["tid"] == 1
    assert tgt.call("POST", "/v1/targets", {"iqn": iqn})[0] == 409
    lun = tgt.add_lun(iqn, "vol1", [gw])
    assert lun == {"lun": 1, "size": 64 * MiB, "epoch": 1, "current": gw.nbd, "tid": 1, "target_created": False}
    lun2 = tgt.add_lun(iqn, "vol2", [gw], lun=5, epoch=3, switchable=False)
    assert lun2["lun"] == 5 and lun2["epoch"] == 3
    assert tgt.call("POST", f"/v1/targets/{iqn}/luns", {"volume": "vol1", "gateways": [gw.nbd]})[0] == 409
    st, t = tgt.call("GET", f"/v1/targets/{iqn}")
    assert st == 200
    assert [(l["lun"], l["volume"], l["switchable"], l["epoch"]) for l in t["luns"]] == \
        [(1, "vol1", True, 1), (5, "vol2", False, 3)]
    row = tgt.status("vol2")
    assert row["iqn"] == iqn and row["lun"] == "5" and row["switchable"] == "0" and row["status"] == "0"
    assert row["currentGw"] == gw.nbd and row["perferGw"] == gw.nbd and row["epoch"] == "3"
    for k in ("readError", "writeError", "ioCnt", "ioTotal", "readIops", "readKBps", "readDelayAvg",
              "writeIops", "writeKBps", "writeDelayAvg"):
        assert row[k].isdigit(), (k, row)

    # A session shows up in /v1/sessions while it lasts.
    from tcluster import Verifier
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, 1), threads=1, blocks=64,
                 initiator="iqn.2026-11.io.ferry.test:sess")
    sessions = poll(lambda: [s for s in tgt.call("GET", "/v1/sessions")[1]["sessions"]
                             if s["initiator"] == "iqn.2026-11.io.ferry.test:sess"], what="session listed")
    assert sessions[0]["target"] == iqn
    assert len(sessions[0]["isid"]) == 12
    assert sessions[0]["address"].startswith("127.0.0.1:")
    res = v.result()
    assert res["errors"] == 0 and res["mismatches"] == 0, res

    # Extend at the gateway, then resize: READ CAPACITY shows the new size.
    gw.extend("vol1", 96 * MiB)
    st, body = tgt.call("POST", "/v1/volumes/vol1/resize", {})
    assert st == 200 and body["size"] == 96 * MiB, body
    out = run(["iscsi-readcapacity16", tgt.url(iqn, 1)]).stdout
    assert f"Total size:{96 * MiB}" in out
    assert tgt.call("GET", f"/v1/targets/{iqn}")[1]["luns"][0]["size"] == 96 * MiB

    st, body = tgt.call("POST", "/v1/volumes/vol2/switchable", {"switchable": True})
    assert st == 200
    assert tgt.status("vol2")["switchable"] == "1"

    assert tgt.call("DELETE", f"/v1/targets/{iqn}/luns/5")[0] == 200
    assert tgt.status("vol2") is None
    assert tgt.call("DELETE", f"/v1/targets/{iqn}")[0] == 200
    assert tgt.call("GET", "/v1/targets")[1] == {"targets": []}
    assert tgt.call("GET", "/v1/status")[1] == {"volumes": []}
    p = run(["iscsi-inq", tgt.url(iqn, 1)], check=False)
    assert p.returncode != 0


def test_timeouts_and_fixedmode(procs, tmp_path):
    tgt = Target(procs, str(tmp_path / "state")).start()
    tgt.set_timeout("write", 5)
    tgt.set_timeout("recovery", 30)
    tgt.set_timeout("switch", 0)
    st, t = tgt.call("GET", "/v1/timeouts")
    assert t["write"] == 5 and t["recovery"] == 30 and t["switch"] == 0
    req = urllib.request.Request(tgt.admin + "/v1/timeouts?type=write")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.read().decode() == '{"write":5}'
    assert tgt.call("PUT", "/v1/fixedmode", {"gateway": "127.0.0.1:8585"})[1] == \
        {"enabled": True, "gateway": "127.0.0.1:8585"}
    assert tgt.call("GET", "/v1/fixedmode")[1]["gateway"] == "127.0.0.1:8585"
    # survives a restart
    tgt.stop()
    tgt.start()
    assert tgt.call("GET", "/v1/timeouts")[1]["write"] == 5
    assert tgt.call("GET", "/v1/fixedmode")[1] == {"enabled": True, "gateway": "127.0.0.1:8585"}
    assert tgt.call("DELETE", "/v1/fixedmode")[1] == {"enabled": False, "gateway": ""}


def test_delete_target_drops_its_sessions(procs, tmp_path):
    gw, tgt = cluster(procs, tmp_path, volumes=("vol1", "vol2"))
    a, b = f"{IQN_PREFIX}:a", f"{IQN_PREFIX}:b"
    for iqn, vol in ((a, "vol1"), (b, "vol2")):
        tgt.create_target(iqn, open=True)
        tgt.add_lun(iqn, vol, [gw])
    from tcluster import Verifier
    va = Verifier(procs, str(tmp_path), tgt.url(a, 1), name="va", threads=1, blocks=64, initiator="iqn.x:a")
    vb = Verifier(procs, str(tmp_path), tgt.url(b, 1), name="vb", threads=1, blocks=64, initiator="iqn.x:b")
    poll(lambda: len(tgt.call("GET", "/v1/sessions")[1]["sessions"]) == 2, what="two sessions")
    assert tgt.call("DELETE", f"/v1/targets/{a}")[0] == 200
    poll(lambda: [s["target"] for s in tgt.call("GET", "/v1/sessions")[1]["sessions"]] == [b],
         what="a's session dropped, b's kept")
    va.proc.kill()
    res = vb.result()  # the other target's I/O never noticed
    assert res["errors"] == 0 and res["mismatches"] == 0, res


def test_add_lun_creates_its_target_in_one_call(procs, tmp_path):
    gw, tgt = cluster(procs, tmp_path, volumes=("vol1", "vol2"))
    iqn = f"{IQN_PREFIX}:one-call"
    chap = {"user": "u1", "secret": "secret-12345678"}
    # Bad target settings: refused, nothing created.
    st, body = tgt.call("POST", f"/v1/targets/{iqn}/luns",
                        {"volume": "vol1", "gateways": [gw.nbd], "target": {"acl": "nope"}})
    assert st == 400, body
    assert tgt.call("GET", f"/v1/targets/{iqn}")[0] == 404
    body = tgt.add_lun(iqn, "vol1", [gw], target={"acl": {"initiators": ["iqn.x:allowed"]}, "chap": chap})
    assert body["target_created"] is True and body["tid"] >= 1 and body["lun"] == 1, body
    st, t = tgt.call("GET", f"/v1/targets/{iqn}")
    assert st == 200 and t["acl"]["initiators"] == ["iqn.x:allowed"] and len(t["luns"]) == 1, t
    # It is a real target: the admitted initiator logs in with its CHAP secret, another one does not.
    url = f"iscsi://u1%secret-12345678@{tgt.portal}/{iqn}/1"
    assert run(["iscsi-readcapacity16", "-i", "iqn.x:allowed", url], check=False).returncode == 0
    assert run(["iscsi-readcapacity16", "-i", "iqn.x:other", url], check=False).returncode != 0
    # A second LUN with the same settings joins it; other settings are refused.
    body = tgt.add_lun(iqn, "vol2", [gw], target={"acl": {"initiators": ["iqn.x:allowed"]}, "chap": chap})
    assert body["target_created"] is False and body["lun"] == 2, body
    st, body = tgt.call("POST", f"/v1/targets/{iqn}/luns",
                        {"volume": "vol2", "gateways": [gw.nbd], "target": {"open": True}})
    assert st == 409 and "other settings" in body["error"], body
    # Both survive a restart (one journal record set each).
    tgt.stop()
    tgt.start()
    st, t = tgt.call("GET", f"/v1/targets/{iqn}")
    assert st == 200 and [l["volume"] for l in t["luns"]] == ["vol1", "vol2"], t


def test_out_of_threads_refuses_the_lun_and_keeps_serving(procs, tmp_path):
    # Each LUN's gateway connection has a reader thread (8 MiB stack). With an
    # address-space limit just above what the target maps now, the next ones
    # cannot start: add_lun must fail with the reason, the target must live on
    # and serve what it has, and take LUNs again once there is room.
    import resource
    gw, tgt = cluster(procs, tmp_path, volumes=[f"vol{i}" for i in range(1, 16)])
    iqn = f"{IQN_PREFIX}:threads"
    tgt.create_target(iqn, open=True)
    tgt.add_lun(iqn, "vol1", [gw])
    pid = tgt.proc.pid
    vm = int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmSize:")))
    hard = resource.prlimit(pid, resource.RLIMIT_AS)[1]
    resource.prlimit(pid, resource.RLIMIT_AS, ((vm + 40 * 1024) * 1024, hard))
    refused = None
    for i in range(2, 16):
        st, body = tgt.call("POST", f"/v1/targets/{iqn}/luns", {"volume": f"vol{i}", "gateways": [gw.nbd]})
        if st != 201:
            refused = (i, st, body)
            break
    assert refused is not None, "the limit never bit"
    i, st, body = refused
    assert st == 503 and "cannot start the connection's reader thread" in body["error"], body
    assert tgt.proc.poll() is None
    resource.prlimit(pid, resource.RLIMIT_AS, (hard, hard))
    assert f"Total size:{64 * MiB}" in run(["iscsi-readcapacity16", tgt.url(iqn, 1)]).stdout
    assert tgt.call("POST", f"/v1/targets/{iqn}/luns", {"volume": f"vol{i}", "gateways": [gw.nbd]})[0] == 201
    assert [l["volume"] for l in tgt.call("GET", f"/v1/targets/{iqn}")[1]["luns"]] == [f"vol{k}" for k in range(1, i + 1)]


def test_add_lun_raise_epoch_takes_the_epoch_the_gateway_grants(procs, tmp_path):
    # raise_epoch: the target opens VOL@+FLOOR, the gateway raises the stored
    # epoch to max(stored + 1, FLOOR) in one step, and the LUN keeps what was
    # granted (so a stale floor never yields a fenced, read-only export).
    from tcluster import Verifier
    gw, tgt = cluster(procs, tmp_path, volumes=("vol1", "vol2"))
    assert http("POST", gw.admin + "/v1/volumes/vol1/fence", {"epoch": 5}, token=TOKEN)[0] == 200
    iqn = f"{IQN_PREFIX}:raise"
    tgt.create_target(iqn, open=True)
    lun = tgt.add_lun(iqn, "vol1", [gw], epoch=2, raise_epoch=True)
    assert lun["epoch"] == 6 and lun["epoch_raised"] is True, lun
    assert gw.volume("vol1")["epoch"] == 6
    lun2 = tgt.add_lun(iqn, "vol2", [gw], epoch=10, raise_epoch=True)
    assert lun2["epoch"] == 10 and gw.volume("vol2")["epoch"] == 10
    assert [l["epoch"] for l in tgt.call("GET", f"/v1/targets/{iqn}")[1]["luns"]] == [6, 10]
    assert tgt.status("vol1")["epoch"] == "6"
    # Writable at the granted epoch (not a fenced export), through real iSCSI.
    v = Verifier(procs, str(tmp_path), tgt.url(iqn, lun["lun"]), threads=1, blocks=64)
    res = v.result()
    assert res["errors"] == 0 and res["mismatches"] == 0 and res["writes"] > 0, res
    # A volume the gateway does not have: 503 with the reason, nothing added.
    st, body = tgt.call("POST", f"/v1/targets/{iqn}/luns", {"volume": "ghost", "gateways": [gw.nbd],
                                                             "epoch": 1, "raise_epoch": True})
    assert st == 503 and "cannot open it at a new epoch" in body["error"], body
    assert len(tgt.call("GET", f"/v1/targets/{iqn}")[1]["luns"]) == 2
    # A malformed flag is refused and changes nothing.
    st, body = tgt.call("POST", f"/v1/targets/{iqn}/luns", {"volume": "vol2", "gateways": [gw.nbd],
                                                             "raise_epoch": "yes"})
    assert st == 400, body
    assert gw.volume("vol2")["epoch"] == 10
