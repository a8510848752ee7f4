"""Conformance of the SCSI device server with libiscsi's iscsi-test-cu.

The target is ferry-scsi-testportal, a TEST HARNESS: the product's
scsi::Target with RAM LUNs behind the product's iSCSI transport (no
gateways; the process-level run through real gateways lives in
tests/target/). Runs the SCSI family of iscsi-test-cu with --dataloss and a
second (multipath) URL, scores every test by its worst verdict, prints the
score and every non-PASS test, and requires no FAIL.
"""
import os
import re
import subprocess
import sys
import time

from ferrytest import binary

# One scorer for every conformance run: the runner's (cu-score's exact rules on
# a log whose verdicts each end their own line).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target"))
from conformance import normalize, score  # noqa: E402

IQN = "iqn.2026-11.io.ferry:scsi-conformance"
# Measured with this harness on 2026-11-22 with -V (PASS 178, SKIP 37 of 215 SCSI
# tests); a drop means a regression in target/scsi.
MIN_PASS = 178


def start_portal(procs):
    p = procs.start("scsi-testportal", [binary("ferry-scsi-testportal"), "--listen", "127.0.0.1:0",
                                        "--iqn", IQN, "--size-mb", "64"])
    end = time.time() + 10
    while time.time() < end:
        with open(p.ferry_log, errors="replace") as f:
            m = re.search(r"^READY 127\.0\.0\.1:(\d+)", f.read(), re.M)
        if m:
            return int(m.group(1))
        if p.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError("testportal did not start: " + open(p.ferry_log, errors="replace").read())


def test_iscsi_test_cu_scsi_family(procs, tmp_path):
    port = start_portal(procs)
    url = f"iscsi://127.0.0.1:{port}/{IQN}/0"
    r = subprocess.run(["iscsi-test-cu", "--dataloss", "-V", "-t", "SCSI", url, url],
                       capture_output=True, text=True, timeout=150)
    (tmp_path / "iscsi-test-cu.log").write_text(r.stdout + r.stderr)
    res = score(normalize(r.stdout))
    counts = {v: sum(1 for x in res.values() if x == v) for v in ("PASS", "SKIP", "FAIL")}
    print(f"\niscsi-test-cu SCSI family: pass {counts['PASS']} skip {counts['SKIP']} "
          f"fail {counts['FAIL']} total {len(res)}")
    for name in sorted(res):
        if res[name] != "PASS":
            print(f"  {res[name]} {name}")
    assert len(res) > 150, "iscsi-test-cu ran too few tests:\n" + r.stdout[-3000:] + r.stderr[-2000:]
    assert counts["FAIL"] == 0, [n for n, v in res.items() if v == "FAIL"]
    assert counts["PASS"] >= MIN_PASS
