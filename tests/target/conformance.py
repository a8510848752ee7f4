#!/usr/bin/env python3
"""Conformance runner: libiscsi's iscsi-test-cu --dataloss against ferry-target
(target -> real ferry-gateway -> store) and against tgt (tgtd, rdwr file LUN of
the same size), in one run on loopback. Two initiator names are admitted by
ACL (not "open"), and the multipath URL goes through a second portal.

Writes two logs per target: the raw iscsi-test-cu output (NAME-cu.log) and a
scored copy (NAME-cu.score.log) in which each CUnit verdict ends its own line
(see normalize()). Scores the scored copy with /work/shared/tools/cu-score's
rules (worst verdict per distinct test), runs cu-score itself on it when it
exists and checks the two agree test by test, prints both scores and Ferry's
non-PASS tests, and exits 1 when Ferry has any FAIL, --min-pass is not
reached, or the runner and cu-score disagree.

usage: tests/target/conformance.py [--build DIR] [--only ferry|tgt] [--size-mib N]
                                   [--min-pass N] [--keep DIR] [--test REGEX]
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
sys.path.insert(0, HERE)
import ferrytest  # noqa: E402
from ferrytest import Procs, free_port, wait_port  # noqa: E402

INIT1 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
INIT2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"
IQN = "iqn.2026-11.io.ferry:conformance"
RANK = {"PASS": 0, "SKIP": 1, "FAIL": 2}


# CUnit prints a test's verdict ("passed"/"FAILED") without a newline; the
# newline comes with the next "\n  Test:" or "\nSuite:". When a suite's
# cleanup logs something with -V (e.g. the PR suites' "Send PRIN/READ_KEYS"),
# that text lands on the verdict's line ("passed    Send PRIN/READ_KEYS"), and
# cu-score, which wants the verdict at the end of its line, loses the test.
# CUnit only ever writes a verdict at the start of a line or right after
# "  Test: NAME ...", so splitting there changes no verdict.
VERDICT_THEN_TEXT = re.compile(r"^((?:  Test: \S+ \.\.\.)?(?:passed|FAILED))(.+)$")


def normalize(text):
    """The raw log with every verdict that has other output after it on its
    line moved to the end of its own line. Nothing else changes."""
    out = []
    for line in text.split("\n"):
        m = VERDICT_THEN_TEXT.match(line)
        if m:
            out += [m.group(1), m.group(2)]
        else:
            out.append(line)
    return "\n".join(out)


def score(text):
    """Worst verdict per distinct SUITE.TEST, by exactly the rules of
    /work/shared/tools/cu-score (run it on a normalize()d log)."""
    results, suite, test, skipped = {}, None, None, False

    def put(name, verdict):
        if RANK[verdict] >= RANK.get(results.get(name), -1):
            results[name] = verdict

    for line in text.splitlines():
        m = re.match(r"^Suite: (\S+)", line)
        if m:
            suite = m.group(1)
            continue
        m = re.match(r"^  Test: (\S+) \.\.\.(.*)$", line)
        if m:
            test, rest = m.group(1), m.group(2)
            skipped = "[SKIPPED]" in rest
            line = rest
        if test is None:
            continue
        if "[SKIPPED]" in line:
            skipped = True
        tail = line.strip()
        if tail.endswith("passed") and not tail.startswith("[") or tail == "passed":
            put(f"{suite}.{test}", "SKIP" if skipped else "PASS")
            test = None
        elif tail.endswith("FAILED") and not tail.startswith("["):
            put(f"{suite}.{test}", "FAIL")
            test = None
    return results


def counts(res):
    c = {k: sum(1 for v in res.values() if v == k) for k in RANK}
    return f"pass {c['PASS']} skip {c['SKIP']} fail {c['FAIL']} total {len(res)}", c


def run_cu(url, url2, log, test=None, timeout=1800):
    """Runs iscsi-test-cu, copying its output to LOG as it comes and timing each
    test (LOG.times: seconds per SUITE.TEST, summed over families, slowest
    first); then writes the scored log. Returns (exit code, seconds)."""
    # Line-buffered stdout: CUnit verdicts (stdout) and the -V SCSI log (stderr) must not interleave.
    argv = ["stdbuf", "-oL", "-eL", "iscsi-test-cu", "--dataloss", "-V", "-i", INIT1, "-I", INIT2]
    if test:
        argv += ["-t", test]
    argv += [url, url2]
    t0 = time.time()
    times, suite, cur, since = {}, None, None, t0
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watchdog = threading.Timer(timeout, p.kill)
    watchdog.start()
    try:
        with open(log, "wb") as f:
            for raw in p.stdout:
                f.write(raw)
                line = raw.decode(errors="replace")
                m = re.match(r"^Suite: (\S+)", line)
                if m:
                    suite = m.group(1)
                m = re.match(r"^  Test: (\S+) \.\.\.", line)
                if m:
                    now = time.time()
                    if cur:
                        times[cur] = times.get(cur, 0.0) + now - since
                    cur, since = f"{suite}.{m.group(1)}", now
        rc = p.wait()
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    secs = time.time() - t0
    if cur:
        times[cur] = times.get(cur, 0.0) + t0 + secs - since
    if rc == -signal.SIGKILL and secs >= timeout:
        raise subprocess.TimeoutExpired(argv, timeout)
    with open(log + ".times", "w") as f:
        for name, t in sorted(times.items(), key=lambda kv: -kv[1]):
            f.write(f"{t:8.2f} {name}\n")
    write_score_log(log)
    return rc, secs


def slowest(log, n):
    """The n slowest tests of a run_cu log as 'SECONDS NAME' strings."""
    try:
        with open(log + ".times") as f:
            return [line.strip() for line in f][:n]
    except OSError:
        return []


def score_log_path(log):
    """Where write_score_log puts the normalized copy of a raw log."""
    return re.sub(r"\.log$", "", log) + ".score.log"


def write_score_log(log):
    with open(log, errors="replace") as f:
        text = f.read()
    with open(score_log_path(log), "w") as f:
        f.write(normalize(text))
    return score_log_path(log)


def cu_score_tool():
    """/work/shared/tools/cu-score (../shared/tools from the repo), or $FERRY_CU_SCORE; None if absent."""
    p = os.environ.get("FERRY_CU_SCORE") or os.path.join(HERE, "..", "..", "..", "shared", "tools", "cu-score")
    p = os.path.abspath(p)
    return p if os.access(p, os.X_OK) else None


def cu_score(tool, log):
    """Runs cu-score LOG --list; returns (per-test verdicts, its summary line)."""
    out = subprocess.run([tool, log, "--list"], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.strip().splitlines()
    res = {}
    for line in lines[:-1]:
        verdict, name = line.split(None, 1)
        res[name.strip()] = verdict
    return res, lines[-1] if lines else ""


def http_ok(method, url, body, token):
    st, resp = ferrytest.http(method, url, body, token=token, timeout=30)
    if st not in (200, 201):
        raise RuntimeError(f"{method} {url} -> {st} {resp}")
    return resp


def run_ferry(procs, work, size, test, timeout=1800):
    token = "conformance"
    nbd, gadm = free_port(), free_port()
    procs.start("ferry-gateway", [ferrytest.binary("ferry-gateway"), "--data-dir", os.path.join(work, "data"),
                                  "--nbd-listen", f"127.0.0.1:{nbd}", "--admin-listen", f"127.0.0.1:{gadm}",
                                  "--token", token, "--log-level", "warn"])
    wait_port("127.0.0.1", gadm, 20)
    wait_port("127.0.0.1", nbd, 20)
    http_ok("POST", f"http://127.0.0.1:{gadm}/v1/volumes", {"name": "cu", "size": size}, token)
    p1, p2, tadm = free_port(), free_port(), free_port()
    procs.start("ferry-target", [ferrytest.binary("ferry-target"), "--state-dir", os.path.join(work, "state"),
                                 "--iscsi-listen", f"127.0.0.1:{p1}", "--iscsi-listen", f"127.0.0.1:{p2}",
                                 "--admin-listen", f"127.0.0.1:{tadm}", "--token", token,
                                 "--log-level", "warn"])
    wait_port("127.0.0.1", tadm, 20)
    admin = f"http://127.0.0.1:{tadm}"
    http_ok("POST", admin + "/v1/targets", {"iqn": IQN, "acl": {"initiators": [INIT1, INIT2]}}, token)
    http_ok("POST", admin + f"/v1/targets/{IQN}/luns", {"volume": "cu", "gateways": [f"127.0.0.1:{nbd}"]}, token)
    log = os.path.join(work, "ferry-cu.log")
    rc, secs = run_cu(f"iscsi://127.0.0.1:{p1}/{IQN}/1", f"iscsi://127.0.0.1:{p2}/{IQN}/1", log, test, timeout)
    return log, secs


def run_tgt(procs, work, size, test):
    if not shutil.which("tgtd"):
        raise RuntimeError("tgtd not installed (apt-get install tgt)")
    port = free_port()
    # -C is an index for tgtd's control socket (/var/run/tgtd/socket.N, N <= 32767), not a TCP port.
    ctl = random.randint(1000, 30000)
    while os.path.exists(f"/var/run/tgtd/socket.{ctl}"):
        ctl = random.randint(1000, 30000)
    backing = os.path.join(work, "tgt.img")
    with open(backing, "wb") as f:
        f.truncate(size)
    procs.start("tgtd", ["tgtd", "-f", "-C", str(ctl), "--iscsi", f"portal=127.0.0.1:{port}"])
    wait_port("127.0.0.1", port, 20)
    adm = ["tgtadm", "-C", str(ctl), "--lld", "iscsi"]

    def tgtadm(*a):
        for _ in range(50):  # the control socket appears shortly after the portal
            p = subprocess.run(adm + list(a), capture_output=True, text=True, timeout=30)
            if p.returncode == 0:
                return
            if "connect" not in (p.stderr + p.stdout).lower():
                raise RuntimeError(f"tgtadm {a}: {p.stderr}{p.stdout}")
            time.sleep(0.1)
        raise RuntimeError(f"tgtadm {a}: control port never answered")

    tiqn = "iqn.2026-11.io.ferry:tgt-peer"
    tgtadm("--mode", "target", "--op", "new", "--tid", "1", "--targetname", tiqn)
    tgtadm("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1", "--backing-store", backing,
           "--bstype", "rdwr")
    for name in (INIT1, INIT2):
        tgtadm("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-name", name)
    log = os.path.join(work, "tgt-cu.log")
    url = f"iscsi://127.0.0.1:{port}/{tiqn}/1"
    try:
        rc, secs = run_cu(url, url, log, test)
    finally:
        procs.close()
        for suffix in ("", ".lock"):  # tgtd leaves its control socket behind
            try:
                os.unlink(f"/var/run/tgtd/socket.{ctl}{suffix}")
            except OSError:
                pass
    return log, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", help="build dir (default $FERRY_BUILD_DIR or ./build)")
    ap.add_argument("--only", choices=["ferry", "tgt"])
    ap.add_argument("--size-mib", type=int, default=128)
    ap.add_argument("--min-pass", type=int, default=0)
    ap.add_argument("--keep", help="keep logs in this directory")
    ap.add_argument("--test", help="iscsi-test-cu -t filter (FAMILY[.SUITE[.TEST]])")
    a = ap.parse_args()
    if a.build:
        ferrytest.BIN = os.path.join(os.path.abspath(a.build), "bin")
    work = a.keep or tempfile.mkdtemp(prefix="ferry-conformance-")
    os.makedirs(work, exist_ok=True)
    size = a.size_mib << 20
    scores = {}
    with Procs(work) as procs:
        if a.only in (None, "ferry"):
            log, secs = run_ferry(procs, work, size, a.test)
            scores["ferry"] = (secs, log)
        procs.close()
        procs.procs.clear()
        if a.only in (None, "tgt"):
            log, secs = run_tgt(procs, work, size, a.test)
            scores["tgt"] = (secs, log)
    tool = cu_score_tool()
    failed = False
    results = {}
    for name, (secs, log) in scores.items():
        slog = score_log_path(log)
        res = score(open(slog, errors="replace").read())
        results[name] = res
        line, _ = counts(res)
        print(f"{name}: {line}   ({secs:.0f} s; raw log {log}, scored log {slog})")
        print(f"{name}: slowest tests (s): " + ", ".join(slowest(log, 8)))
        if tool:
            theirs, summary = cu_score(tool, slog)
            agree = theirs == res
            print(f"{name}: cu-score {slog}: {summary}   [{'agrees' if agree else 'DISAGREES'} test by test]")
            if not agree:
                failed = True
                for k in sorted(set(res) | set(theirs)):
                    if res.get(k) != theirs.get(k):
                        print(f"  runner {res.get(k, '-'):4} cu-score {theirs.get(k, '-'):4} {k}")
        else:
            print(f"{name}: cu-score not found (set FERRY_CU_SCORE); runner's score only")
    if "ferry" in results:
        res = results["ferry"]
        bad = sorted(k for k, v in res.items() if v != "PASS")
        if bad:
            print("ferry non-PASS tests:")
            for k in bad:
                peer = results.get("tgt", {}).get(k, "-")
                print(f"  {res[k]:4} {k}   (tgt: {peer})")
        _, c = counts(res)
        if not res or c["FAIL"] > 0 or c["PASS"] < a.min_pass:
            failed = True
        if "tgt" in results:
            _, t = counts(results["tgt"])
            print(f"ferry PASS - tgt PASS = {c['PASS'] - t['PASS']}")
    if "tgt" in results:
        bad = sorted(k for k, v in results["tgt"].items() if v == "FAIL")
        if bad:
            print("tgt FAIL tests: " + " ".join(bad))
    if not a.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
