"""ferry-backend as a real process: every endpoint's bad input, auth, routing
errors, oversize bodies, the compatibility API's shapes, persistence across a
restart, TLS with a self-signed certificate made by the openssl CLI."""
import json
import os
import socket
import ssl
import subprocess
import urllib.error

import pytest

from bcluster import TOKEN, Backend, poll, raw
from ferrytest import binary, free_port, http


@pytest.fixture
def backend(procs, tmp_path):
    return Backend(procs, tmp_path).start()


def test_bad_flags_exit_with_reason(tmp_path):
    for argv in (["--nope", "1"], ["--listen", "bad"], ["--http-threads", "0"], ["--tls-cert", "x"]):
        p = subprocess.run([binary("ferry-backend"), "--db", str(tmp_path / "x.db"), *argv],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 2, (argv, p.stderr)
        assert "ferry-backend:" in p.stderr


def test_routing_and_auth_errors_are_json(backend):
    st, body = backend.call("GET", "/v1/nothing")
    assert st == 404 and "error" in body
    st, body = backend.call("PATCH", "/v1/volumes")
    assert st == 405 and "error" in body
    # Missing or wrong token on mutating calls.
    for method, path in (("POST", "/v1/volumes"), ("DELETE", "/v1/volumes/x"),
                         ("POST", "/v1/volumes/x/attachments"), ("POST", "/v1/reconcile"),
                         ("PUT", "/tgtmaster/register/gateway?gateway=127.0.0.1:1:2"),
                         ("PUT", "/tgtmaster/register/tgt?tgt=127.0.0.2&admin=127.0.0.2:1"),
                         ("GET", "/sys/iscsi?ops=add_lun&name=x"),
                         ("GET", "/sys/iscsi?ops=timeout&type=read&duration=5"),
                         ("PUT", "/sys/debug/fixedmode?gateway=127.0.0.1:1")):
        for tok in (None, "wrong"):
            st, body = backend.call(method, path, {"name": "x"} if method == "POST" else None, token=tok)
            assert st == 401, (method, path, tok, st, body)
            assert "error" in body
    # Bearer works too.
    st, _ = raw("PUT", backend.url + "/tgtmaster/register/gateway?gateway=127.0.0.1:8585:8686",
                headers={"Authorization": "Bearer " + TOKEN})
    assert st == 200
    # Read-only queries are open on loopback.
    for path in ("/healthz", "/v1/volumes", "/v1/stats", "/v1/events", "/metrics", "/v1/targets",
                 "/v1/gateways", "/sys/iscsi?ops=show", "/tgtmaster/volume/status"):
        st, _ = backend.call("GET", path, token=None)
        assert st == 200, path
    for path in ("/tgtmaster/gatewaymap", "/tgtmaster/tgtmap"):
        st, _ = backend.call("PUT", path, token=None)
        assert st == 200, path


def test_oversize_and_malformed_bodies(backend):
    # The server answers 413 from the declared length, without reading the body
    # (so send only the headers and a little of it, as a client would before a 100-continue).
    with socket.create_connection(("127.0.0.1", backend.port), timeout=10) as s:
        s.sendall(b"POST /v1/volumes HTTP/1.1\r\nHost: x\r\nX-Ferry-Token: " + TOKEN.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n" + b"x" * 1024)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply
    assert "error" in json.loads(body)
    for bad in (b"", b"{", b"[]", b'"s"', b'{"name": 5, "size_gb": 1}', b'{"name": "a"}',
                b'{"name": "a", "size_gb": -1}', b'{"name": "a", "size_gb": 1.5}',
                b'{"name": "../../etc", "size_gb": 1}', b'{"name": "a", "size_gb": 1, "source": {"snapshot": {}}}'):
        st, body = raw("POST", backend.url + "/v1/volumes", data=bad,
                       headers={"X-Ferry-Token": TOKEN, "Content-Type": "application/json"})
        assert st == 400, (bad, st, body)
        assert "error" in json.loads(body)
    for path, bad in (("/v1/volumes/a/extend", b'{"size_gb": "x"}'), ("/v1/volumes/a/snapshots", b"{}"),
                      ("/v1/volumes/a/revert", b'{"snapshot": 1}'), ("/v1/volumes/a/attachments", b"{}"),
                      ("/v1/volumes/a/attachments", b'{"connector": []}')):
        st, body = raw("POST", backend.url + path, data=bad, headers={"X-Ferry-Token": TOKEN})
        assert st == 400, (path, bad, st, body)
    # Unknown names.
    for method, path, body in (("GET", "/v1/volumes/none", None), ("DELETE", "/v1/volumes/none", None),
                               ("POST", "/v1/volumes/none/extend", {"size_gb": 2}),
                               ("POST", "/v1/volumes/none/snapshots", {"name": "s"}),
                               ("DELETE", "/v1/volumes/none/snapshots/s", None),
                               ("POST", "/v1/volumes/none/revert", {"snapshot": "s"}),
                               ("POST", "/v1/volumes/none/attachments", {"connector": {"host": "h"}}),
                               ("DELETE", "/v1/volumes/none/attachments", {"connector": {"host": "h"}})):
        st, b = backend.call(method, path, body)
        assert st == 404, (method, path, st, b)
    # Nothing was changed by any of that.
    st, body = backend.call("GET", "/v1/events")
    assert body["events"] == []


def test_compat_bad_input(backend):
    cases = {
        "": 400, "ops=frob": 400, "ops=add_lun": 400, "ops=add_lun&name=a%2Fb": 400,
        "ops=add_lun&name=nope": 404, "ops=del_lun&name=nope": 404, "ops=get_lun&name=nope": 404,
        "ops=add_lun&name=v&tgt=not-ip": 400, "ops=add_lun&name=v&iqn=bogus": 400,
        "ops=del_iqn": 400, "ops=del_iqn&iqn=iqn.2026-11.io.ferry:none": 404,
        "ops=mov_lun&name=v": 400, "ops=switchable_lun&name=v&flag=maybe": 400,
        "ops=timeout": 400, "ops=timeout&type=read": 400, "ops=timeout&type=read&duration=x": 400,
        "ops=timeout&type=read&duration=0": 400, "ops=timeout&type=switch&duration=-1": 400,
        "ops=timeout&type=recovery&duration=15": 400, "ops=timeout&type=reconnect&duration=25": 400,
        "ops=timeout&type=nope&duration=10": 400, "ops=timeout&type=read&duration=10&tgt=127.0.0.9": 404,
        "ops=timeout&type=show&tgt=127.0.0.9": 404,
    }
    for q, want in cases.items():
        st, body = backend.compat(q)
        assert st == want, (q, st, body)
        assert "error" in body, q
    for method, path, want in (("PUT", "/tgtmaster/register/gateway", 400),
                               ("PUT", "/tgtmaster/register/gateway?gateway=127.0.0.1:8585", 400),
                               ("PUT", "/tgtmaster/register/gateway?gateway=x:1:2", 400),
                               ("PUT", "/tgtmaster/register/gateway?gateway=127.0.0.1:0:2", 400),
                               ("DELETE", "/tgtmaster/register/gateway?gateway=127.0.0.1:1:2", 404),
                               ("PUT", "/tgtmaster/register/tgt?tgt=127.0.0.2", 400),
                               ("PUT", "/tgtmaster/register/tgt?tgt=127.0.0.2&port=x&admin=127.0.0.2:1", 400),
                               ("PUT", "/tgtmaster/tgt", 400), ("PUT", "/tgtmaster/tgt?tgt=127.0.0.9", 404),
                               ("PUT", "/tgtmaster/detailtgt?tgt=127.0.0.9", 404),
                               ("PUT", "/tgtmaster/gateway", 400), ("PUT", "/tgtmaster/detailgateway?gw=1.1.1.1:1", 404),
                               ("PUT", "/tgtmaster/volume", 400), ("PUT", "/tgtmaster/volume?volname=none", 404),
                               ("PUT", "/sys/debug/fixedmode", 400),
                               ("PUT", "/sys/debug/fixedmode?gateway=127.0.0.1:9", 404),
                               ("POST", "/tgtmaster/tgtmap", 405), ("DELETE", "/tgtmaster/volume/status", 405)):
        st, body = backend.call(method, path)
        assert st == want, (method, path, st, body)
        assert "error" in body


def test_registry_maps_pretty_and_restart(procs, tmp_path):
    b = Backend(procs, tmp_path, extra=["--heartbeat-period-ms", "200", "--heartbeat-miss", "2"]).start()
    assert b.call("PUT", "/tgtmaster/register/gateway?gateway=127.0.0.1:8585:8686")[0] == 200
    assert b.call("PUT", "/tgtmaster/register/tgt?tgt=127.0.0.2&port=3260&admin=127.0.0.2:8890")[0] == 200
    st, text = raw("PUT", b.url + "/tgtmaster/gatewaymap?pretty=y")
    assert st == 200 and text.startswith('{\n  "ServerCount": 1,\n  "ServerInfos": [\n')
    body = json.loads(text)
    assert body["ServerInfos"][0]["IpPort"] == "127.0.0.1:8585"
    assert body["ServerInfos"][0]["VolumeCount"] == 0
    st, body = b.call("PUT", "/tgtmaster/tgtmap")
    assert body["ServerCount"] == 1 and body["ServerInfos"][0]["IpPort"] == "127.0.0.2"
    assert body["ServerInfos"][0]["Status"] == 0
    # No more beats: offline after 2 missed periods, shown in the maps.
    poll(lambda: b.call("PUT", "/tgtmaster/tgtmap")[1]["ServerInfos"][0]["Status"] == 1, timeout=10,
         what="target offline")
    poll(lambda: b.call("PUT", "/tgtmaster/gatewaymap")[1]["ServerInfos"][0]["Status"] == 1, timeout=10,
         what="gateway offline")
    st, body = b.compat("ops=show")
    assert body["Iscsi"][0]["Status"] == 1
    # A beat brings it back.
    assert b.call("PUT", "/tgtmaster/register/tgt?tgt=127.0.0.2&port=3260&admin=127.0.0.2:8890")[0] == 200
    assert b.call("PUT", "/tgtmaster/tgtmap")[1]["ServerInfos"][0]["Status"] == 0
    # Timeouts stored (no online target to forward to would fail; this one is unreachable).
    st, body = b.compat("ops=timeout&type=readretry&duration=864000&tgt=127.0.0.2")
    assert st == 503 and "saved" in body["error"]
    st, body = b.compat("ops=timeout&type=show&pretty=y")
    assert st == 200 and body["Timeouts"][0]["readretry"] == 864000 and body["Timeouts"][0]["read"] == 60
    events_before = b.call("GET", "/v1/events")[1]["last"]
    # Restart: the map and the log survive.
    procs.stop(b.proc)
    b.start()
    st, body = b.call("PUT", "/tgtmaster/tgtmap")
    assert body["ServerCount"] == 1
    assert b.compat("ops=timeout&type=show")[1]["Timeouts"][0]["readretry"] == 864000
    assert b.call("GET", "/v1/events")[1]["last"] >= events_before
    st, body = b.call("DELETE", "/tgtmaster/register/gateway?gateway=127.0.0.1:8585:8686")
    assert st == 200
    assert b.call("PUT", "/tgtmaster/gatewaymap")[1]["ServerCount"] == 0
    st, text = raw("GET", b.url + "/metrics")
    assert "ferry_backend_http_requests_total" in text and "ferry_backend_event_seq" in text


def test_tls_with_self_signed_certificate(procs, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    b = Backend(procs, tmp_path, extra=["--tls-cert", str(cert), "--tls-key", str(key)])
    b.scheme = "https"
    b.proc = procs.start(b.name, b.argv())
    ctx = ssl.create_default_context(cafile=str(cert))
    def up():
        try:
            return raw("GET", b.url + "/healthz", context=ctx)[0] == 200
        except OSError:
            return False
    poll(up, timeout=20, what="https healthz")
    # Verified against the generated certificate; token still required.
    st, text = raw("PUT", b.url + "/tgtmaster/register/gateway?gateway=127.0.0.1:8585:8686", context=ctx)
    assert st == 401
    st, text = raw("PUT", b.url + "/tgtmaster/register/gateway?gateway=127.0.0.1:8585:8686",
                   headers={"X-Ferry-Token": TOKEN}, context=ctx)
    assert st == 200, text
    st, text = raw("PUT", b.url + "/tgtmaster/gatewaymap", context=ctx)
    assert json.loads(text)["ServerCount"] == 1
    # A client that does not trust the certificate is refused; plain HTTP gets no answer.
    with pytest.raises(urllib.error.URLError) as e:
        raw("GET", b.url + "/healthz", context=ssl.create_default_context())
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)
    with pytest.raises(Exception):
        raw("GET", f"http://127.0.0.1:{b.port}/healthz", timeout=5)
    # Still serving after the failed handshakes.
    assert raw("GET", b.url + "/healthz", context=ctx)[0] == 200


def healthy(p, url):
    if p.poll() is not None:
        pytest.fail(f"backend exited with {p.returncode}")
    try:
        return raw("GET", url + "/healthz", timeout=2)[0] == 200
    except OSError:
        return False


def test_ini_config_file_and_flag_precedence(procs, tmp_path):
    port = free_port()
    cfg = tmp_path / "ferry.ini"
    cfg.write_text(f"""
[backend]
listen = 127.0.0.1:{port}
iqn_prefix = iqn.2026-11.org.example
[db]
file = {tmp_path / 'from-ini.db'}
[auth]
token = ini-token
""")
    p = procs.start("backend-ini", [binary("ferry-backend"), "--config", str(cfg)])
    poll(lambda: healthy(p, f"http://127.0.0.1:{port}"), timeout=20, what="backend from INI")
    url = f"http://127.0.0.1:{port}"
    assert http("PUT", url + "/tgtmaster/register/gateway?gateway=127.0.0.1:1:2", token=TOKEN)[0] == 401
    assert http("PUT", url + "/tgtmaster/register/gateway?gateway=127.0.0.1:1:2", token="ini-token")[0] == 200
    assert os.path.exists(tmp_path / "from-ini.db")
    procs.stop(p)
    # A flag wins over the file.
    port2 = free_port()
    p = procs.start("backend-ini2", [binary("ferry-backend"), "--config", str(cfg), "--listen", f"127.0.0.1:{port2}",
                                     "--token", "flag-token"])
    poll(lambda: healthy(p, f"http://127.0.0.1:{port2}"), timeout=20, what="backend with flags")
    url = f"http://127.0.0.1:{port2}"
    assert http("PUT", url + "/tgtmaster/register/gateway?gateway=127.0.0.1:5:3", token="flag-token")[0] == 200
    assert http("PUT", url + "/tgtmaster/gatewaymap")[1]["ServerCount"] == 2  # same INI database
    h = subprocess.run([binary("ferry-backend"), "--help"], capture_output=True, text=True, timeout=20)
    assert h.returncode == 0 and "--kafka-brokers" in h.stdout


def test_event_retention_keeps_the_newest_and_says_where_history_starts(procs, tmp_path):
    p = subprocess.run([binary("ferry-backend"), "--db", str(tmp_path / "x.db"), "--events-keep", "-1"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 2 and "events_keep" in p.stderr, p.stderr
    b = Backend(procs, tmp_path, extra=["--events-keep", "5"]).start()
    for i in range(12):  # each registration is one event
        st, _ = b.call("PUT", f"/tgtmaster/register/gateway?gateway=127.0.0.1:{20000 + i}:{21000 + i}")
        assert st == 200
    _, ev = b.call("GET", "/v1/events?after=0")
    assert ev["last"] >= 12

    def pruned():
        _, e = b.call("GET", "/v1/events?after=0")
        return e if len(e["events"]) == 5 else None
    ev = poll(pruned, timeout=15, what="retention down to 5 events")
    assert ev["first"] == ev["last"] - 4
    assert [e["seq"] for e in ev["events"]] == list(range(ev["first"], ev["last"] + 1))
    # The map is untouched by retention: every gateway is still registered.
    _, gws = b.call("GET", "/v1/gateways")
    assert len(gws["gateways"]) == 12
