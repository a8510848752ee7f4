"""ferry-gateway admin HTTP API: the contract in docs/gateway.md, including bad
input (400/404/405/409/401) and idempotent create."""
import urllib.request

import pytest

from gateway_helpers import connect, start_gateway
from ferrytest import http

MiB = 1 << 20
TOKEN = "s3cret"


@pytest.fixture
def gw(procs, tmp_path):
    return start_gateway(procs, tmp_path / "data", token=TOKEN)


def test_health_and_list(gw):
    st, js = gw.api("GET", "/healthz", token="")
    assert st == 200
    assert js["status"] == "ok"
    assert js["nbd"] == f"127.0.0.1:{gw.nbd_port}"
    assert js["admin"] == f"127.0.0.1:{gw.admin_port}"
    assert js["pid"] == gw.proc.pid
    assert js["data_dir"] == gw.data_dir
    assert gw.api("GET", "/v1/volumes", token="") == (200, {"volumes": []})


def test_volume_lifecycle(gw):
    st, v = gw.api("POST", "/v1/volumes", {"name": "v1", "size": 8 * MiB})
    assert st == 201
    assert v["name"] == "v1" and v["size"] == 8 * MiB and v["allocated"] == 0 and v["epoch"] == 0
    assert v["chunk_size"] == 65536 and v["snapshots"] == []
    # Safe retry: same name and size -> 200; other size -> 409.
    st, again = gw.api("POST", "/v1/volumes", {"name": "v1", "size": 8 * MiB})
    assert st == 200 and again["name"] == "v1"
    st, js = gw.api("POST", "/v1/volumes", {"name": "v1", "size": 16 * MiB})
    assert st == 409 and "error" in js
    h = connect(gw, "v1")
    h.pwrite(b"\x42" * 65536, 0)
    h.shutdown()
    st, v = gw.api("GET", "/v1/volumes/v1")
    assert st == 200 and v["allocated"] >= 65536
    st, v = gw.api("POST", "/v1/volumes/v1/extend", {"size": 16 * MiB})
    assert st == 200 and v["size"] == 16 * MiB
    st, js = gw.api("POST", "/v1/volumes/v1/extend", {"size": 4 * MiB})
    assert st == 400 and "shrink" in js["error"]
    st, s = gw.api("POST", "/v1/volumes/v1/snapshots", {"name": "s1"})
    assert st == 201 and s["name"] == "s1" and s["size"] == 16 * MiB and s["created"] > 0
    st, js = gw.api("POST", "/v1/volumes/v1/snapshots", {"name": "s1"})
    assert st == 409
    st, js = gw.api("GET", "/v1/volumes/v1/snapshots")
    assert st == 200 and [x["name"] for x in js["snapshots"]] == ["s1"]
    st, js = gw.api("DELETE", "/v1/volumes/v1")
    assert st == 409  # it has a snapshot
    st, js = gw.api("DELETE", "/v1/volumes/v1/snapshots/s1")
    assert st == 200 and js == {"deleted": "s1"}
    st, js = gw.api("DELETE", "/v1/volumes/v1/snapshots/s1")
    assert st == 404
    st, js = gw.api("DELETE", "/v1/volumes/v1")
    assert st == 200 and js == {"deleted": "v1"}
    assert gw.api("GET", "/v1/volumes/v1")[0] == 404
    assert gw.api("DELETE", "/v1/volumes/v1")[0] == 404


def test_fence_raises_epoch(gw):
    gw.create("f", MiB)
    st, js = gw.api("POST", "/v1/volumes/f/fence", {"epoch": 5})
    assert st == 200 and js["epoch"] == 5
    st, js = gw.api("POST", "/v1/volumes/f/fence", {"epoch": 3})
    assert st == 200 and js["epoch"] == 5  # never lowers
    assert gw.api("GET", "/v1/volumes/f")[1]["epoch"] == 5
    assert gw.api("POST", "/v1/volumes/nope/fence", {"epoch": 1})[0] == 404
    assert gw.api("POST", "/v1/volumes/f/fence", {"epoch": -1})[0] == 400
    assert gw.api("POST", "/v1/volumes/f/fence", {})[0] == 400


@pytest.mark.parametrize("body", [
    None, "not json", [1, 2], {"name": "x"}, {"size": MiB}, {"name": "", "size": MiB},
    {"name": "../etc", "size": MiB}, {"name": "a/b", "size": MiB}, {"name": "..", "size": MiB},
    {"name": "x" * 129, "size": MiB}, {"name": "ok", "size": -512}, {"name": "ok", "size": 0},
    {"name": "ok", "size": 1000}, {"name": "ok", "size": "1048576"}, {"name": "ok", "size": 1.5},
    {"name": 7, "size": MiB}, {"name": "ok", "size": MiB, "source": "vol"},
    {"name": "ok", "size": MiB, "source": {"volume": "../x"}},
])
def test_create_bad_input_is_400(gw, body):
    req = urllib.request.Request(gw.admin + "/v1/volumes", method="POST",
                                 data=None if body is None else (body if isinstance(body, str) else __import__("json").dumps(body)).encode())
    req.add_header("X-Ferry-Token", TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
        assert b"error" in e.read()
    assert status == 400, body
    assert gw.api("GET", "/v1/volumes")[1] == {"volumes": []}  # nothing created


def test_not_found_and_conflicts(gw):
    assert gw.api("GET", "/v1/volumes/missing")[0] == 404
    assert gw.api("POST", "/v1/volumes/missing/extend", {"size": MiB})[0] == 404
    assert gw.api("POST", "/v1/volumes/missing/snapshots", {"name": "s"})[0] == 404
    assert gw.api("POST", "/v1/volumes", {"name": "c", "size": MiB, "source": {"volume": "missing"}})[0] == 404
    gw.create("src", MiB)
    st, js = gw.api("POST", "/v1/volumes", {"name": "c", "size": MiB, "source": {"volume": "src", "snapshot": "no"}})
    assert st == 404
    st, js = gw.api("POST", "/v1/volumes", {"name": "c", "size": 512, "source": {"volume": "src"}})
    assert st == 400  # smaller than its source
    assert gw.api("POST", "/v1/volumes/src/revert", {"snapshot": "nope"})[0] == 404
    assert gw.api("POST", "/v1/volumes/src/revert", {})[0] == 400
    assert gw.api("POST", "/region/pool/vol/snapshot?volname=src")[0] == 400
    assert gw.api("POST", "/region/pool/vol/snapshot?volname=src&snapname=nope")[0] == 404
    assert gw.api("GET", "/v1/volumes/..")[0] in (400, 404)
    assert gw.api("GET", "/v1/nothing")[0] == 404


def test_wrong_method_is_405(gw):
    assert gw.api("PUT", "/v1/volumes", {"name": "x", "size": MiB})[0] == 405
    assert gw.api("DELETE", "/healthz")[0] == 405
    assert gw.api("GET", "/v1/volumes/x/revert")[0] == 405


def test_token_required_on_mutating_calls(gw):
    st, js = http("POST", gw.admin + "/v1/volumes", {"name": "t", "size": MiB})
    assert st == 401 and "error" in js
    st, js = http("POST", gw.admin + "/v1/volumes", {"name": "t", "size": MiB}, token="wrong")
    assert st == 401
    assert gw.api("GET", "/v1/volumes", token="")[1] == {"volumes": []}  # nothing created
    req = urllib.request.Request(gw.admin + "/v1/volumes", method="POST",
                                 data=b'{"name":"t","size":1048576}')
    req.add_header("Authorization", "Bearer " + TOKEN)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    assert http("DELETE", gw.admin + "/v1/volumes/t")[0] == 401
    assert http("POST", gw.admin + "/v1/volumes/t/fence", {"epoch": 9})[0] == 401
    assert gw.api("GET", "/v1/volumes/t", token="")[1]["epoch"] == 0
