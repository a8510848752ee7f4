"""Who may log in to an attached volume, proven with real logins: ferry-backend
(CHAP on, its default) with a real ferry-gateway and real ferry-targets on
127.0.0.2/127.0.0.3 started WITHOUT --demo-open, and libiscsi's iscsi-inq as
the initiator. Also the attachment's placement by connector ip / host / load."""
import os
import subprocess

import pytest

from bcluster import TOKEN, Backend, Gateway, Target, poll

INI_A = "iqn.1994-05.com.example:host-a"
INI_B = "iqn.1994-05.com.example:host-b"
INI_C = "iqn.1994-05.com.example:host-c"
HB = ["--heartbeat-period-ms", "500", "--heartbeat-miss", "4", "--reconcile-interval", "0"]


class Cluster:
    def __init__(self, procs, tmp, extra=(), target_extra=()):
        self.backend = Backend(procs, tmp, extra=[*HB, *extra]).start()
        data = os.path.join(str(tmp), "data")
        os.makedirs(data)
        self.gw = Gateway(procs, data, "gw0", self.backend.url).start()
        self.t2 = Target(procs, os.path.join(str(tmp), "t2"), "t2", "127.0.0.2", self.backend.url, demo_open=False,
                         extra=target_extra)
        self.t3 = Target(procs, os.path.join(str(tmp), "t3"), "t3", "127.0.0.3", self.backend.url, demo_open=False,
                         extra=target_extra)
        for t in (self.t2, self.t3):
            t.start()

        def registered():
            _, g = self.call("PUT", "/tgtmaster/gatewaymap")
            _, t = self.call("PUT", "/tgtmaster/tgtmap")
            return ([s["Status"] for s in g["ServerInfos"]] == [0] and
                    {s["IpPort"] for s in t["ServerInfos"] if s["Status"] == 0} == {"127.0.0.2", "127.0.0.3"})
        poll(registered, timeout=30, what="gateway and targets registered")

    def call(self, *a, **kw):
        return self.backend.call(*a, **kw)

    def create(self, name):
        st, body = self.call("POST", "/v1/volumes", {"name": name, "size_gb": 1})
        assert st == 201, body

    def attach(self, vol, host, ini, ip=""):
        st, body = self.call("POST", f"/v1/volumes/{vol}/attachments",
                             {"connector": {"ip": ip, "host": host, "initiator": ini}})
        assert st == 200, body
        assert body["driver_volume_type"] == "iscsi"
        return body["data"]

    def detach(self, vol, host):
        return self.call("DELETE", f"/v1/volumes/{vol}/attachments", {"connector": {"host": host}})


def inq(data, initiator, user=None, password=None):
    """One SCSI INQUIRY through a full iSCSI login; returns (ok, output)."""
    cred = ""
    if user is not None:
        cred = f"{user}%{password}@"
    url = f"iscsi://{cred}{data['target_portal']}/{data['target_iqn']}/{data['target_lun']}"
    p = subprocess.run(["iscsi-inq", "-i", initiator, url], capture_output=True, text=True, timeout=30)
    return p.returncode == 0 and "Vendor" in p.stdout, p.stdout + p.stderr


def login_ok(data, ini):
    ok, out = inq(data, ini, data["auth_username"], data["auth_password"])
    return ok


def test_chap_credentials_from_the_attachment_are_accepted_and_others_refused(procs, tmp_path):
    c = Cluster(procs, tmp_path)
    c.create("sec")
    a = c.attach("sec", "host-a", INI_A, ip="127.0.0.2")
    assert a["target_portal"] == c.t2.portal
    assert a["auth_method"] == "CHAP" and a["auth_username"].startswith("ferry-")
    assert len(a["auth_password"]) == 32 and "discovery_auth_method" not in a
    ok, out = inq(a, INI_A, a["auth_username"], a["auth_password"])
    assert ok, out
    # Wrong password, wrong user, no CHAP at all: refused.
    assert not inq(a, INI_A, a["auth_username"], a["auth_password"][:-1] + "x")[0]
    assert not inq(a, INI_A, "ferry-someone", a["auth_password"])[0]
    assert not inq(a, INI_A)[0]
    # The right secret from an initiator that is not attached: refused by the ACL.
    assert not login_ok(a, INI_B)
    # The secret is not in the open event view.
    _, ev = c.call("GET", "/v1/events?after=0")
    assert a["auth_password"] not in str(ev)
    # A retried attach gives the same credentials; the login still works.
    again = c.attach("sec", "host-a", INI_A, ip="127.0.0.2")
    assert again["auth_password"] == a["auth_password"]
    assert login_ok(again, INI_A)
    assert c.detach("sec", "host-a") == (200, {"shared": False})
    _, targets = c.call("GET", "/v1/volumes/sec")
    assert targets["exports"] == []


def test_acl_follows_the_attachments_of_one_target(procs, tmp_path):
    c = Cluster(procs, tmp_path)
    c.create("multi")
    a = c.attach("multi", "host-a", INI_A, ip="127.0.0.2")
    assert login_ok(a, INI_A) and not login_ok(a, INI_B)
    # A second attachment on the SAME target from another initiator: both admitted, a third is not.
    b = c.attach("multi", "host-b", INI_B, ip="127.0.0.2")
    assert (b["target_portal"], b["target_iqn"], b["target_lun"]) == \
        (a["target_portal"], a["target_iqn"], a["target_lun"])
    assert b["auth_password"] == a["auth_password"]
    assert login_ok(b, INI_A) and login_ok(b, INI_B)
    assert not login_ok(b, INI_C)
    _, t = c.call("GET", "/v1/volumes/multi")
    assert [e["target"] for e in t["exports"]] == ["127.0.0.2"]
    # Detaching one removes only that initiator; the export stays for the other.
    assert c.detach("multi", "host-a") == (200, {"shared": True})
    assert not login_ok(b, INI_A)
    assert login_ok(b, INI_B)
    assert c.detach("multi", "host-b") == (200, {"shared": False})
    assert not login_ok(b, INI_B)


def discover(data, initiator, user=None, password=None):
    """SendTargets discovery through iscsi-ls; returns (ok, output)."""
    cred = f"{user}%{password}@" if user is not None else ""
    p = subprocess.run(["iscsi-ls", "-i", initiator, f"iscsi://{cred}{data['target_portal']}"],
                       capture_output=True, text=True, timeout=30)
    return p.returncode == 0, p.stdout + p.stderr


def test_chap_off_and_discovery_chap_are_reported_and_accepted(procs, tmp_path):
    disc = ["--discovery-chap-user", "disc", "--discovery-chap-secret", "disc-secret-1234"]
    c = Cluster(procs, tmp_path, extra=["--chap", "off", *disc], target_extra=disc)
    c.create("open")
    a = c.attach("open", "host-a", INI_A, ip="127.0.0.3")
    assert "auth_method" not in a and a["target_portal"] == c.t3.portal
    assert (a["discovery_auth_method"], a["discovery_auth_username"], a["discovery_auth_password"]) == \
        ("CHAP", "disc", "disc-secret-1234")
    ok, out = inq(a, INI_A)  # no CHAP on the target; the ACL still holds
    assert ok, out
    assert not inq(a, INI_B)[0]
    # The reported discovery credentials are the ones the target asks for.
    ok, out = discover(a, INI_A, a["discovery_auth_username"], a["discovery_auth_password"])
    assert ok and a["target_iqn"] in out, out
    ok, out = discover(a, INI_A, "disc", "wrong-secret-99")
    assert not ok and "Authentication failure" in out, out
    ok, out = discover(a, INI_A)
    assert not ok and "Authentication failure" in out, out


def test_attachment_placement_by_ip_then_host_then_load(procs, tmp_path):
    c = Cluster(procs, tmp_path, extra=["--target-hosts", "compute3=127.0.0.3"])
    # A target that names its host when it registers (the tgtmaster call with the optional host=).
    st, body = c.call("PUT", f"/tgtmaster/register/tgt?tgt=127.0.0.2&port={c.t2.iscsi_port}"
                             f"&admin=127.0.0.2:{c.t2.admin_port}&host=compute2")
    assert st == 200, body
    for i in range(5):
        c.create(f"p{i}")
    # 1. The connector's ip names a target: that one, whatever the host says.
    assert c.attach("p0", "compute2", INI_A, ip="127.0.0.3")["target_portal"] == c.t3.portal
    # 2. Else the target on the connector's host: reported at registration (kept across
    #    the target's own heartbeats, which do not carry it) ...
    d = c.attach("p1", "compute2", INI_A, ip="10.250.0.1")
    assert d["target_portal"] == c.t2.portal
    assert login_ok(d, INI_A)
    # ... or configured with --target-hosts.
    assert c.attach("p2", "Compute3", INI_B)["target_portal"] == c.t3.portal
    # 3. Else the least loaded: .2 has 1 LUN, .3 has 2.
    assert c.attach("p3", "elsewhere", INI_C, ip="10.250.0.9")["target_portal"] == c.t2.portal
    _, ts = c.call("GET", "/v1/targets")
    assert {t["ip"]: (t["luns"], t["host"]) for t in ts["targets"]} == \
        {"127.0.0.2": (2, "compute2"), "127.0.0.3": (2, "")}
    # A malformed host at registration is refused.
    st, _ = c.call("PUT", f"/tgtmaster/register/tgt?tgt=127.0.0.2&port={c.t2.iscsi_port}"
                          f"&admin=127.0.0.2:{c.t2.admin_port}&host=bad%20host")
    assert st == 400
