"""ferry-relay-ceiling, the tool behind bench/relay-ceiling.

Its numbers only mean something if the bytes really make the trip: every
answer read directly from the server, through the splice relay and through
the copy relay is compared with the file (--verify), at 1 MiB and at 4 KiB
with many requests in flight. Bad arguments exit 2 with a message before
anything starts; a request past the end of the file ends that connection
(the reader says so and fails) and the server keeps serving the next one.
"""
import json
import os
import subprocess

import pytest

from ferrytest import binary, free_port, wait_port

SIZE = 8 << 20


def tool(*args, timeout=30):
    return subprocess.run([binary("ferry-relay-ceiling"), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def chain(tmp_path, procs):
    data = tmp_path / "data.img"
    data.write_bytes(os.urandom(SIZE))
    ports = {name: free_port() for name in ("serve", "splice", "copy", "lowat")}
    exe = binary("ferry-relay-ceiling")
    procs.start("serve", [exe, "serve", "--file", str(data), "--listen", f"127.0.0.1:{ports['serve']}"])
    for mode in ("splice", "copy"):
        procs.start(f"relay-{mode}", [exe, "relay", "--listen", f"127.0.0.1:{ports[mode]}",
                                      "--to", f"127.0.0.1:{ports['serve']}", "--mode", mode])
    procs.start("relay-lowat", [exe, "relay", "--listen", f"127.0.0.1:{ports['lowat']}", "--to",
                                f"127.0.0.1:{ports['serve']}", "--mode", "splice", "--piece", "64K", "--lowat", "256K"])
    for p in ports.values():
        wait_port("127.0.0.1", p)
    return data, ports


@pytest.mark.parametrize("hop", ["serve", "splice", "copy", "lowat"])
@pytest.mark.parametrize("block,depth", [("1M", "8"), ("4K", "32")])
def test_every_answer_arrives_intact(chain, hop, block, depth):
    data, ports = chain
    r = tool("read", "--connect", f"127.0.0.1:{ports[hop]}", "--size", str(SIZE), "--block", block,
             "--depth", depth, "--seconds", "1", "--verify", str(data))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] is True
    assert out["mismatches"] == 0
    # At least one whole pass over the file (wrapping works) and byte counts add up.
    assert out["ios"] * {"1M": 1 << 20, "4K": 4096}[block] == out["bytes"]
    assert out["bytes"] >= SIZE
    assert out["mb_per_s"] > 0


def test_a_request_past_the_end_fails_loudly_and_the_server_lives_on(chain):
    data, ports = chain
    # --size larger than the file: the reader asks past its end once it gets there.
    r = tool("read", "--connect", f"127.0.0.1:{ports['serve']}", "--size", str(SIZE * 4), "--seconds", "3")
    assert r.returncode == 1
    assert "connection lost" in r.stderr
    r = tool("read", "--connect", f"127.0.0.1:{ports['splice']}", "--size", str(SIZE), "--seconds", "1",
             "--verify", str(data))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mismatches"] == 0


@pytest.mark.parametrize("args,message", [
    ([], "a role is required"),
    (["fly"], "unknown role"),
    (["read", "--size", "1M"], "--connect is required"),
    (["read", "--connect", "127.0.0.1:1"], "--size is required"),
    (["read", "--connect", "localhost:1", "--size", "1M"], "must be IPv4:port"),
    (["read", "--connect", "127.0.0.1:99999", "--size", "1M"], "bad port"),
    (["read", "--connect", "127.0.0.1:1", "--size", "1M", "--depth", "0"], "--depth must be in"),
    (["read", "--connect", "127.0.0.1:1", "--size", "1M", "--block", "12x"], "--block must be a number"),
    (["read", "--connect", "127.0.0.1:1", "--size", "1M", "--bogus", "1"], "unknown option --bogus"),
    (["read", "--connect", "127.0.0.1:1", "--size"], "--size needs a value"),
    (["relay", "--listen", "127.0.0.1:1", "--to", "127.0.0.1:2", "--mode", "teleport"], "--mode must be"),
    (["serve", "--listen", "127.0.0.1:1"], "--file is required"),
    (["relay", "--listen", "127.0.0.1:1", "--to", "127.0.0.1:2", "--mode", "splice", "--piece", "2M"],
     "--piece must be in"),
])
def test_bad_arguments_exit_2_with_a_message(args, message):
    r = tool(*args)
    assert r.returncode == 2
    assert message in r.stderr


def test_missing_file_is_an_error(tmp_path):
    r = tool("serve", "--file", str(tmp_path / "nope"), "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert "nope" in r.stderr
