"""Events through Kafka: ferry-backend publishes its outbox to librdkafka's
in-process mock cluster (run by ferry-kafka-mock); the topic is read back with
kcat. A broker outage leaves events unsent in the outbox; they are delivered,
in order, when the broker returns."""
import json
import select
import subprocess

import pytest

from bcluster import Backend, poll
from ferrytest import binary

TOPIC = "ferry-events-test"


@pytest.fixture
def kafka():
    p = subprocess.Popen([binary("ferry-kafka-mock"), TOPIC], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 20)
        assert ready, "kafka mock did not start"
        line = p.stdout.readline().strip()
        assert line.startswith("BOOTSTRAP "), line
        p.bootstrap = line.split(" ", 1)[1]
        yield p
    finally:
        p.kill()
        p.wait(timeout=10)


def command(k, cmd):
    k.stdin.write(cmd + "\n")
    k.stdin.flush()
    ready, _, _ = select.select([k.stdout], [], [], 10)
    assert ready and k.stdout.readline().strip() == "OK " + cmd


def read_topic(bootstrap):
    p = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", TOPIC, "-o", "beginning", "-e", "-q",
                        "-f", "%k\t%s\n"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = []
    for line in p.stdout.splitlines():
        if not line.strip():
            continue
        key, value = line.split("\t", 1)
        v = json.loads(value)
        assert int(key) == v["seq"]
        out.append(v)
    return out


def unsent(b):
    return [e["seq"] for e in b.call("GET", "/v1/events")[1]["events"] if not e["sent"]]


def test_events_reach_kafka_and_survive_an_outage(procs, tmp_path, kafka):
    b = Backend(procs, tmp_path, extra=["--kafka-brokers", kafka.bootstrap, "--kafka-topic", TOPIC,
                                        "--heartbeat-period-ms", "600000"]).start()
    for i in range(3):
        assert b.call("PUT", f"/tgtmaster/register/gateway?gateway=127.0.0.1:{8585 + i}:{8686 + i}")[0] == 200
    poll(lambda: not unsent(b) and len(b.call("GET", "/v1/events")[1]["events"]) == 3, timeout=30,
         what="3 events confirmed")
    got = read_topic(kafka.bootstrap)
    assert [e["seq"] for e in got] == [1, 2, 3]
    assert all(e["type"] == "gateway.registered" for e in got)
    assert got[1]["payload"]["addr"] == "127.0.0.1:8586"

    command(kafka, "down")
    for i in range(3, 5):
        assert b.call("PUT", f"/tgtmaster/register/gateway?gateway=127.0.0.1:{8585 + i}:{8686 + i}")[0] == 200
    # Not confirmed while the broker is down: they stay in the outbox.
    poll(lambda: "not confirmed" in b.log(), timeout=40, what="delivery failure reported")
    assert unsent(b) == [4, 5]
    st, text = b.call("GET", "/metrics")
    assert "ferry_backend_events_unsent 2" in text
    command(kafka, "up")
    poll(lambda: not unsent(b), timeout=60, what="outbox drained after the outage")
    seqs = [e["seq"] for e in read_topic(kafka.bootstrap)]
    # Every event exactly in order (a duplicate could only follow a timeout; consumers drop it by seq).
    dedup = [s for i, s in enumerate(seqs) if s not in seqs[:i]]
    assert dedup == [1, 2, 3, 4, 5], seqs
    assert b.call("GET", "/v1/events")[1]["last"] == 5
    assert seqs == sorted(seqs)
