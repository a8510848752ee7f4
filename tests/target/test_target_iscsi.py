"""Interop of ferry-target with real initiators: libiscsi tools and qemu's
iscsi:// driver, CHAP one-way and mutual, ACLs."""
import hashlib
import os

from tcluster import IQN_PREFIX, Gateway, Target, run

MiB = 1 << 20


def make_cluster(procs, tmp_path, size=64 * MiB, **target_kw):
    gw = Gateway(procs, str(tmp_path / "data"), "gw1").start()
    gw.create_volume("vol1", size)
    tgt = Target(procs, str(tmp_path / "state")).start()
    iqn = f"{IQN_PREFIX}:vol1"
    tgt.create_target(iqn, **target_kw)
    tgt.add_lun(iqn, "vol1", [gw])
    return gw, tgt, iqn


def test_libiscsi_tools(procs, tmp_path):
    gw, tgt, iqn = make_cluster(procs, tmp_path, open=True)
    out = run(["iscsi-ls", "-s", f"iscsi://{tgt.portal}"]).stdout
    assert f"Target:{iqn} Portal:{tgt.portal},1" in out
    assert "Lun:1" in out and "DIRECT_ACCESS" in out
    out = run(["iscsi-inq", tgt.url(iqn, 1)]).stdout
    assert "Vendor:FERRY" in out
    # VPD 0x83 device identification carries an NAA designator.
    out = run(["iscsi-inq", "-e", "1", "-c", "131", tgt.url(iqn, 1)]).stdout
    assert "Designator Type:(3) NAA" in out, out
    out = run(["iscsi-readcapacity16", tgt.url(iqn, 1)]).stdout
    assert f"Total size:{64 * MiB}" in out
    assert "LOGICAL BLOCK LENGTH IN BYTES:512" in out
    # A LUN that does not exist is refused.
    assert run(["iscsi-readcapacity16", tgt.url(iqn, 9)], check=False).returncode != 0


def test_qemu_round_trip_with_checksums(procs, tmp_path):
    gw, tgt, iqn = make_cluster(procs, tmp_path, open=True)
    url = tgt.url(iqn, 1)
    src = tmp_path / "src.raw"
    data = os.urandom(16 * MiB)
    src.write_bytes(data)
    run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), url], timeout=120)
    out = tmp_path / "out.raw"
    run(["qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(out)], timeout=120)
    back = out.read_bytes()
    assert len(back) == 64 * MiB
    assert hashlib.sha256(back[:16 * MiB]).hexdigest() == hashlib.sha256(data).hexdigest()
    assert back[16 * MiB:] == bytes(48 * MiB)  # never written: zeros
    # qemu-io: patterned writes at unaligned-to-chunk offsets, FUA, discard, read back.
    r = run(["qemu-io", "-f", "raw",
             "-c", "write -P 0x5a 4190208 8192",       # straddles the 4 MiB chunk boundary
             "-c", "write -P 0xc3 -f 40M 1M",          # FUA
             "-c", "flush",
             "-c", "read -P 0x5a 4190208 8192",
             "-c", "read -P 0xc3 40M 1M",
             "-c", "discard 40M 1M",
             url], timeout=60).stdout
    assert "Pattern verification failed" not in r, r
    assert r.count("read ") == 2, r
    r = run(["qemu-io", "-f", "raw", "-c", "read -P 0x5a 4190208 8192", url]).stdout
    assert "Pattern verification failed" not in r, r
    info = run(["qemu-img", "info", "-f", "raw", url]).stdout
    assert f"virtual size: 64 MiB ({64 * MiB} bytes)" in info


def test_chap_one_way(procs, tmp_path):
    init = "iqn.2026-11.io.ferry.test:host1"
    gw, tgt, iqn = make_cluster(procs, tmp_path, acl={"initiators": [init]},
                         chap={"user": "alice", "secret": "alice-secret-1"})
    base = f"{tgt.portal}/{iqn}/1"
    ok = run(["iscsi-inq", "-i", init, f"iscsi://alice%alice-secret-1@{base}"], check=False)
    assert ok.returncode == 0, ok.stderr
    assert run(["iscsi-inq", "-i", init, f"iscsi://{base}"], check=False).returncode != 0
    assert run(["iscsi-inq", "-i", init, f"iscsi://alice%wrong-secret-1@{base}"], check=False).returncode != 0
    assert run(["iscsi-inq", "-i", init, f"iscsi://bob%alice-secret-1@{base}"], check=False).returncode != 0
    # The ACL still applies with the right secret.
    other = "iqn.2026-11.io.ferry.test:intruder"
    assert run(["iscsi-inq", "-i", other, f"iscsi://alice%alice-secret-1@{base}"],
               check=False).returncode != 0
    # qemu's own initiator (libiscsi inside qemu), its name and CHAP given as options.
    opts = (f"driver=iscsi,transport=tcp,portal={tgt.portal},target={iqn},lun=1,"
            f"user=alice,password=alice-secret-1,initiator-name={init}")
    r = run(["qemu-io", "--image-opts", "-c", "write -P 0x11 0 64k", "-c", "read -P 0x11 0 64k", opts]).stdout
    assert "Pattern verification failed" not in r and "read 65536/65536" in r, r
    # CHAP can be changed at runtime; the old secret stops working for new logins.
    st, _ = tgt.call("PUT", f"/v1/targets/{iqn}/chap", {"user": "alice", "secret": "alice-secret-2"})
    assert st == 200
    assert run(["iscsi-inq", "-i", init, f"iscsi://alice%alice-secret-1@{base}"], check=False).returncode != 0
    assert run(["iscsi-inq", "-i", init, f"iscsi://alice%alice-secret-2@{base}"], check=False).returncode == 0
    # Secrets never come back from the API.
    st, body = tgt.call("GET", "/v1/targets")
    assert "alice-secret" not in str(body)


def test_chap_mutual(procs, tmp_path):
    init = "iqn.2026-11.io.ferry.test:host2"
    gw, tgt, iqn = make_cluster(procs, tmp_path, acl={"initiators": [init]},
                         chap={"user": "alice", "secret": "alice-secret-1",
                               "mutual_user": "tgt", "mutual_secret": "target-secret-9"})
    base = f"{tgt.portal}/{iqn}/1"
    good = f"iscsi://alice%alice-secret-1@{base}?target_user=tgt&target_password=target-secret-9"
    p = run(["iscsi-inq", "-i", init, good], check=False)
    assert p.returncode == 0, p.stderr
    # The initiator refuses a target that answers with another secret.
    bad = f"iscsi://alice%alice-secret-1@{base}?target_user=tgt&target_password=not-the-secret"
    assert run(["iscsi-inq", "-i", init, bad], check=False).returncode != 0
    # Data through the mutually authenticated session.
    p = run(["iscsi-readcapacity16", "-i", init, good], check=False)
    assert p.returncode == 0 and f"Total size:{64 * MiB}" in p.stdout, p.stderr


def test_acl_by_name_and_address(procs, tmp_path):
    init = "iqn.2026-11.io.ferry.test:host3"
    gw, tgt, iqn = make_cluster(procs, tmp_path, acl={"initiators": [init], "addresses": ["127.0.0.0/8"]})
    assert run(["iscsi-inq", "-i", init, tgt.url(iqn, 1)], check=False).returncode == 0
    assert run(["iscsi-inq", "-i", "iqn.2026-11.io.ferry.test:other", tgt.url(iqn, 1)],
               check=False).returncode != 0
    # Discovery shows the target only to admitted initiators.
    out = run(["iscsi-ls", "-i", init, f"iscsi://{tgt.portal}"]).stdout
    assert iqn in out
    out = run(["iscsi-ls", "-i", "iqn.2026-11.io.ferry.test:other", f"iscsi://{tgt.portal}"], check=False).stdout
    assert iqn not in out
    # An address rule that excludes loopback shuts the initiator out.
    st, _ = tgt.call("PUT", f"/v1/targets/{iqn}/acl", {"initiators": [init], "addresses": ["10.0.0.0/8"]})
    assert st == 200
    assert run(["iscsi-inq", "-i", init, tgt.url(iqn, 1)], check=False).returncode != 0
