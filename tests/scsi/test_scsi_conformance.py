"""Conformance of the SCSI device server with libiscsi's iscsi-test-cu.

The target is ferry-scsi-testportal, a TEST HARNESS: the product's
scsi::Target with RAM LUNs behind the product's iSCSI transport (no
gateways; the process-level run through real gateways lives in
tests/target/). Runs the SCSI family of iscsi-test-cu with --dataloss and a
second (multipath) URL, scores every test by its worst verdict, prints the
score and every non-PASS test, and requires no FAIL.
"""
import re
import subprocess
import time

import pytest

from ferrytest import binary

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


def score(text):
    """Worst verdict per Suite.Test: PASS, SKIP (passed but skipped a part) or FAIL."""
    rank = {"PASS": 0, "SKIP": 1, "FAIL": 2}
    results, suite, test, skipped = {}, None, None, False

    def put(name, verdict):
        if rank[verdict] >= rank.get(results.get(name), -1):
            results[name] = verdict

    for line in text.splitlines():
        m = re.match(r"^Suite: (\S+)", line)
        if m:
            suite = m.group(1)
            continue
        m = re.match(r"^  Test: (\S+) \.\.\.(.*)$", line)
        if m:
            test, line, skipped = m.group(1), m.group(2), "[SKIPPED]" in m.group(2)
        if test is None:
            continue
        skipped = skipped or "[SKIPPED]" in line
        tail = line.strip()
        # With -V, teardown output may follow the verdict on the same line.
        if (tail.endswith("passed") and not tail.startswith("[")) or tail.startswith("passed "):
            put(f"{suite}.{test}", "SKIP" if skipped else "PASS")
            test = None
        elif (tail.endswith("FAILED") and not tail.startswith("[")) or tail.startswith("FAILED "):
            put(f"{suite}.{test}", "FAIL")
            test = None
    return results


def test_iscsi_test_cu_scsi_family(procs, tmp_path):
    port = start_portal(procs)
    url = f"iscsi://127.0.0.1:{port}/{IQN}/0"
    r = subprocess.run(["iscsi-test-cu", "--dataloss", "-V", "-t", "SCSI", url, url],
                       capture_output=True, text=True, timeout=150)
    (tmp_path / "iscsi-test-cu.log").write_text(r.stdout + r.stderr)
    res = score(r.stdout)
    counts = {v: sum(1 for x in res.values() if x == v) for v in ("PASS", "SKIP", "FAIL")}
    print(f"\niscsi-test-cu SCSI family: pass {counts['PASS']} skip {counts['SKIP']} "
          f"fail {counts['FAIL']} total {len(res)}")
    for name in sorted(res):
        if res[name] != "PASS":
            print(f"  {res[name]} {name}")
    assert len(res) > 150, "iscsi-test-cu ran too few tests:\n" + r.stdout[-3000:] + r.stderr[-2000:]
    assert counts["FAIL"] == 0, [n for n, v in res.items() if v == "FAIL"]
    assert counts["PASS"] >= MIN_PASS
