"""ferryctl against a real backend, gateways and targets: human tables,
--json for scripts, non-zero exit and a one-line reason on error."""
import json
import subprocess

from bcluster import TOKEN
from ferrytest import binary
from test_backend_cluster import Cluster


def ctl(c, *args, ok=True):
    p = subprocess.run([binary("ferryctl"), "--url", c.backend.url, "--token", TOKEN, *args],
                       capture_output=True, text=True, timeout=60)
    if ok:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def test_ferryctl(procs, tmp_path):
    c = Cluster(procs, tmp_path)
    out = ctl(c, "volume", "create", "v1", "1").stdout
    assert "name:     v1" in out and "state:    available" in out
    assert ctl(c, "volume", "list").stdout.splitlines()[0].split() == ["NAME", "SIZE_GB", "STATE", "GATEWAY", "EPOCH"]
    listed = json.loads(ctl(c, "--json", "volume", "list").stdout)
    assert [v["name"] for v in listed["volumes"]] == ["v1"]
    assert json.loads(ctl(c, "--json", "volume", "extend", "v1", "2").stdout)["size_gb"] == 2
    ctl(c, "snapshot", "create", "v1", "s1")
    assert "s1" in ctl(c, "snapshot", "list", "v1").stdout
    assert "exported on 127.0.0.2" in ctl(c, "lun", "add", "v1", "--tgt", "127.0.0.2").stdout
    show = ctl(c, "lun", "show").stdout
    assert "127.0.0.2" in show and "iqn.2026-11.io.ferry:v1" in show
    ctl(c, "lun", "switchable", "v1", "off")
    assert c.t2.status()["v1"]["switchable"] == "0"
    ctl(c, "lun", "switchable", "v1", "on")
    st = ctl(c, "status").stdout
    assert st.splitlines()[0].startswith("VOLUME") and "v1" in st and "normal" in st
    rows = json.loads(ctl(c, "--json", "status").stdout)
    assert rows[0]["volumeName"] == "v1" and rows[0]["tgt"] == "127.0.0.2"
    assert "moved to 127.0.0.3" in ctl(c, "lun", "move", "v1", "127.0.0.3").stdout
    assert "v1" in ctl(c, "target", "show", "127.0.0.3").stdout
    targets = ctl(c, "target", "list").stdout
    assert "127.0.0.2" in targets and "online" in targets
    assert len(json.loads(ctl(c, "--json", "gateway", "list").stdout)["gateways"]) == 2
    ctl(c, "timeout", "set", "read", "30", "--tgt", "127.0.0.3")
    t = json.loads(ctl(c, "--json", "timeout", "show", "--tgt", "127.0.0.3").stdout)
    assert t["Timeouts"][0]["read"] == 30
    ctl(c, "lun", "del", "v1")
    p = ctl(c, "volume", "delete", "v1", ok=False)
    assert p.returncode == 1 and "snapshot" in p.stderr
    ctl(c, "snapshot", "delete", "v1", "s1")
    ctl(c, "volume", "delete", "v1")
    assert json.loads(ctl(c, "--json", "volume", "list").stdout)["volumes"] == []
    # Errors: non-zero exit, one line on stderr.
    for args, code in ((("volume", "show", "v1"), 1), (("volume", "create", "x", "big"), 2), (("frob",), 2),
                       (("timeout", "set", "recovery", "15"), 1), (("lun", "switchable", "nope", "on"), 1),
                       (("volume",), 2)):
        p = ctl(c, *args, ok=False)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("ferryctl: "), p.stderr
    p = subprocess.run([binary("ferryctl"), "--url", c.backend.url, "volume", "create", "y", "1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "401" in p.stderr
