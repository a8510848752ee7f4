"""ferry-target registers with the real ferry-backend and keeps beating; the
backend being down never stops the target."""
from ferrytest import binary, free_port, http, wait_port
from tcluster import TOKEN, Target, poll


def start_backend(procs, db, port):
    p = procs.start("backend", [binary("ferry-backend"), "--db", db,
                                "--listen", f"127.0.0.1:{port}", "--token", TOKEN,
                                "--heartbeat-period-ms", "200", "--reconcile-interval", "0",
                                "--log-level", "warn"])
    wait_port("127.0.0.1", port, timeout=20)
    return p


def registered(backend_port, ip):
    st, body = http("PUT", f"http://127.0.0.1:{backend_port}/tgtmaster/tgtmap", token=TOKEN, timeout=5)
    if st != 200:
        return None
    rows = [s for s in body.get("ServerInfos", []) if s["IpPort"].split(":")[0] == ip]
    return rows[0] if rows else None


def test_registers_and_survives_backend_outage(procs, tmp_path):
    bport = free_port()
    backend = start_backend(procs, str(tmp_path / "backend1.db"), bport)
    tgt = Target(procs, str(tmp_path / "state"), ip="127.0.0.2")
    tgt.start(extra=["--backend", f"http://127.0.0.1:{bport}", "--heartbeat-ms", "200"])
    row = poll(lambda: registered(bport, "127.0.0.2"), timeout=20, what="target registered")
    assert row.get("Status", 0) == 0, row
    # Backend gone: the target goes on serving and keeps trying.
    procs.stop(backend)
    st, body = tgt.call("POST", "/v1/targets", {"iqn": "iqn.2026-11.io.ferry.test:hb", "open": True})
    assert st == 201, body
    poll(lambda: "registration with" in tgt.log(), timeout=20, what="failure logged")
    assert tgt.proc.poll() is None
    # A backend back with an empty database learns the target from its next beats.
    start_backend(procs, str(tmp_path / "backend2.db"), bport)
    poll(lambda: (lambda r: r and r.get("Status", 0) == 0)(registered(bport, "127.0.0.2")), timeout=30,
         what="target registered again")


def test_host_name_reaches_the_backend(procs, tmp_path):
    bport = free_port()
    start_backend(procs, str(tmp_path / "backend.db"), bport)
    tgt = Target(procs, str(tmp_path / "state"), ip="127.0.0.3")
    tgt.start(extra=["--backend", f"http://127.0.0.1:{bport}", "--heartbeat-ms", "200",
                     "--host-name", "compute-3"])

    def host_of():
        st, body = http("GET", f"http://127.0.0.1:{bport}/v1/targets", token=TOKEN, timeout=5)
        if st != 200:
            return None
        rows = body if isinstance(body, list) else body.get("targets", [])
        hit = [t for t in rows if str(t.get("ip", t.get("tgt", ""))).split(":")[0] == "127.0.0.3"]
        return hit[0].get("host") if hit else None

    assert poll(host_of, timeout=20, what="host registered") == "compute-3"


def test_bad_host_name_is_refused(tmp_path):
    import subprocess
    r = subprocess.run([binary("ferry-target"), "--state-dir", str(tmp_path / "s"), "--host-name", "a/b"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "--host-name" in r.stderr, r.stderr
