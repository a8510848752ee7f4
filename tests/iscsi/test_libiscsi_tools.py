"""Interop: libiscsi's real tools and qemu-img against the real iSCSI transport.

The target is ferry-iscsi-testportal, a TEST HARNESS that serves one RAM LUN
through target/iscsi (the product's SCSI layer is tested elsewhere). Every
daemon is started through the `procs` fixture and bound to 127.0.0.1 on a
free port.
"""
import hashlib
import json
import os
import re
import subprocess
import time

import pytest

from ferrytest import binary

IQN = "iqn.2026-11.org.ferry:pytest"
SIZE_MB = 32


def start_portal(procs, tmp_path, *extra, name="portal"):
    p = procs.start(name, [binary("ferry-iscsi-testportal"), "--listen", "127.0.0.1:0", "--iqn", IQN,
                           "--size-mb", str(SIZE_MB), *extra])
    end = time.time() + 10
    while time.time() < end:
        with open(p.ferry_log, errors="replace") as f:
            m = re.search(r"^READY (.*)$", f.read(), re.M)
        if m:
            return [a.rsplit(":", 1) for a in m.group(1).split()]
        if p.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError("testportal did not start: " + open(p.ferry_log, errors="replace").read())


def run(argv, timeout=60, check=True):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{argv} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def url(port, user=None, lun=0, args=""):
    cred = f"{user}@" if user else ""
    return f"iscsi://{cred}127.0.0.1:{port}/{IQN}/{lun}{args}"


def test_ls_inq_readcapacity(procs, tmp_path):
    (host, port), = start_portal(procs, tmp_path)
    out = run(["iscsi-ls", "-s", f"iscsi://127.0.0.1:{port}"]).stdout
    assert f"Target:{IQN} Portal:127.0.0.1:{port},1" in out
    assert "Lun:0" in out and "DIRECT_ACCESS" in out
    out = run(["iscsi-inq", url(port)]).stdout
    assert "Vendor:FERRY" in out
    out = run(["iscsi-readcapacity16", url(port)]).stdout
    assert f"Total size:{SIZE_MB << 20}" in out


def test_qemu_img_roundtrip_with_and_without_header_digest(procs, tmp_path):
    (host, port), = start_portal(procs, tmp_path)
    src = tmp_path / "src.bin"
    data = os.urandom(8 << 20)
    src.write_bytes(data)
    run(["qemu-img", "convert", "-n", "-O", "raw", str(src), url(port)], timeout=120)
    back = tmp_path / "back.bin"
    spec = {"file.driver": "iscsi", "file.transport": "tcp", "file.portal": f"127.0.0.1:{port}",
            "file.target": IQN, "file.lun": 0, "file.header-digest": "crc32c"}
    run(["qemu-img", "convert", "-O", "raw", "json:" + json.dumps(spec), str(back)], timeout=120)
    got = back.read_bytes()
    assert len(got) == SIZE_MB << 20
    assert hashlib.sha256(got[:len(data)]).digest() == hashlib.sha256(data).digest()
    assert got[len(data):] == bytes(len(got) - len(data))


def test_chap_one_way_mutual_and_refusals(procs, tmp_path):
    (host, port), = start_portal(procs, tmp_path, "--chap-user", "alice", "--chap-secret", "s3cretpassword1",
                                 "--mutual-user", "tgt", "--mutual-secret", "tgtsecret12345",
                                 "--discovery-chap", "1")
    assert "Vendor:FERRY" in run(["iscsi-inq", url(port, "alice%s3cretpassword1")]).stdout
    mutual = "?target_user=tgt&target_password=tgtsecret12345"
    assert "Vendor:FERRY" in run(["iscsi-inq", url(port, "alice%s3cretpassword1", args=mutual)]).stdout
    # Wrong secret, no credentials, and a target that answers mutual CHAP wrongly (as seen by the initiator).
    assert run(["iscsi-inq", url(port, "alice%wrongpassword1")], check=False).returncode != 0
    assert run(["iscsi-inq", url(port)], check=False).returncode != 0
    bad_mutual = "?target_user=tgt&target_password=notthesecret99"
    assert run(["iscsi-inq", url(port, "alice%s3cretpassword1", args=bad_mutual)], check=False).returncode != 0
    # Discovery needs CHAP too.
    assert IQN in run(["iscsi-ls", f"iscsi://alice%s3cretpassword1@127.0.0.1:{port}"]).stdout
    assert run(["iscsi-ls", f"iscsi://127.0.0.1:{port}"], check=False).returncode != 0


def test_acl_refuses_other_initiators(procs, tmp_path):
    (host, port), = start_portal(procs, tmp_path, "--allow", "iqn.2026-11.test:allowed")
    assert run(["iscsi-inq", "-i", "iqn.2026-11.test:allowed", url(port)]).returncode == 0
    assert run(["iscsi-inq", "-i", "iqn.2026-11.test:other", url(port)], check=False).returncode != 0


def test_two_portals_both_serve_and_are_advertised(procs, tmp_path):
    p = procs.start("portal2", [binary("ferry-iscsi-testportal"), "--listen", "127.0.0.1:0",
                                "--listen", "127.0.0.2:0", "--iqn", IQN, "--size-mb", "8"])
    end = time.time() + 10
    addrs = None
    while time.time() < end and addrs is None:
        m = re.search(r"^READY (.*)$", open(p.ferry_log, errors="replace").read(), re.M)
        if m:
            addrs = [a.rsplit(":", 1) for a in m.group(1).split()]
        else:
            time.sleep(0.02)
    assert addrs and len(addrs) == 2
    for host, port in addrs:
        out = run(["iscsi-ls", "-s", f"iscsi://{host}:{port}"]).stdout
        for h2, p2 in addrs:
            assert f"Portal:{h2}:{p2},1" in out
        assert "Vendor:FERRY" in run(["iscsi-inq", f"iscsi://{host}:{port}/{IQN}/0"]).stdout


def test_iscsi_test_cu_iscsi_family_has_no_failures(procs, tmp_path):
    (host, port), = start_portal(procs, tmp_path)
    r = run(["iscsi-test-cu", "--dataloss", "-t", "iSCSI", url(port)], timeout=150, check=False)
    out = r.stdout + r.stderr
    m = re.search(r"^\s+tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)
    assert m, out
    total, ran, passed, failed = map(int, m.groups())
    assert ran == total and total >= 15, out
    assert failed == 0, out


def _read_until(proc, pattern, timeout):
    """Reads proc.stdout (non-blocking) until `pattern` matches; returns all text read."""
    import select
    buf, end = "", time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            if not chunk:
                break
            buf += chunk
            if re.search(pattern, buf):
                return buf
    return buf


def test_iscsi_perf_random_reads_then_stopped_initiator_is_dropped(procs, tmp_path):
    (host, port), = start_portal(procs, tmp_path, "--nop-interval-ms", "200", "--nop-timeout-ms", "1000")
    perf = subprocess.Popen(["iscsi-perf", "-m", "32", "-b", "8", "-r", url(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        out = _read_until(perf, r"(iops average \d+.*){3}", 30)
        iops = [int(x) for x in re.findall(r"iops average (\d+)", out)]
        assert len(iops) >= 3 and min(iops) > 0, out
        assert "error" not in out.lower(), out
        # A frozen initiator stops answering NOP-In: the target drops it.
        os.kill(perf.pid, 19)  # SIGSTOP
        log = procs.procs[0].ferry_log
        end = time.time() + 15
        while time.time() < end and "no answer to NOP-In" not in open(log, errors="replace").read():
            time.sleep(0.05)
        assert "no answer to NOP-In" in open(log, errors="replace").read()
    finally:
        perf.kill()
        perf.wait()
    # The portal still serves others.
    assert "Vendor:FERRY" in run(["iscsi-inq", url(port)]).stdout
