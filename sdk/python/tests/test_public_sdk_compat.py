"""Code written for the PUBLIC Clove Python SDK runs unchanged against our kernel (issue 10, "Done when").

``PROGRAM`` below is such code: it uses only the public SDK's class, method names and signatures (the
ones our SDK keeps for compatibility: ``CloveClient(socket_path)``, ``connect``, ``write_file``,
``read_file``, ``read``, ``exec(command, cwd, timeout)``, ``register_name``, ``spawn(name, script,
sandboxed=…)``, ``send_message``, ``recv_messages``, ``list_agents``, ``pause``, ``resume``, ``kill``,
``get_audit_log``, ``start_recording``, ``store``, ``fetch``, ``stop_recording``,
``get_recording_status(export=True)``, ``start_replay``, ``get_replay_status``, ``disconnect``): no
``hello()``, no blocking ``wait_message``, no keyword extension. It writes and reads files in /tmp, runs
shell commands, spawns unsandboxed workers from a 0700 temporary directory (as ``mktemp -d`` makes),
pauses and resumes them, reads the audit log, and records and replays a session. It prints one JSON
line per step; the tests run it as a user would — a plain ``python3`` script, the SDK on its path, the
socket as its argument — and assert what it printed:

* as the kernel's owner on the operator socket (an operator, with its default rights), all of it;
* as a SANDBOXED agent spawned with default rights (``standard``), its file and shell part.

Where the public SDK or kernel behaved otherwise, our documented behaviour is asserted
(``test_documented_differences_from_the_public_sdk``; docs/protocol.md §5 and the SDK README):
``think()`` is a kernel call (the public SDK ran the model in the client and sent LLM_REPORT), an EXEC
without ``async`` is synchronous (the public kernel's default was async), ``stderr`` is not merged into
``stdout`` (the merged stream is ``output``), SPAWN replies carry ``success``, and REPLAY_START reads
``recording_data`` (the public SDK sent ``recording``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from clove_sdk import SyscallOp

from conftest import PYTHON, SDK

pytestmark = pytest.mark.integration

# A worker and a program as a user of the public SDK writes them (nothing here is Clove-specific).
WORKER = '''\
import sys
import time

from clove_sdk import CloveClient

client = CloveClient(sys.argv[1] if len(sys.argv) > 1 else "/tmp/clove.sock")
client.connect()
client.send_message({"type": "up"}, to_name="compat-boss")
while True:
    for m in client.recv_messages().get("messages", []):
        body = m["message"]
        if body.get("type") == "ping":
            client.send_message({"type": "pong", "n": body["n"]}, to=m["from"])
    time.sleep(0.02)
'''

PROGRAM = '''\
"""Files, shell commands, workers, the audit log, record and replay: with the Clove Python SDK."""
import json
import os
import sys
import tempfile
import time

from clove_sdk import CloveClient

SOCKET = sys.argv[1] if len(sys.argv) > 1 else "/tmp/clove.sock"
PART = os.environ.get("COMPAT_PART", "all")
WORKER = __WORKER__


def show(step, value):
    print(json.dumps({"step": step, "value": value}), flush=True)


client = CloveClient(SOCKET)
if not client.connect():
    print("cannot connect to " + SOCKET)
    sys.exit(1)

# Files in /tmp
path = "/tmp/clove-compat-%d.txt" % os.getpid()
show("path", path)
show("write", client.write_file(path, "first line\\n"))
show("append", client.write_file(path, "second line\\n", mode="append"))
show("read", client.read_file(path))
show("read_alias", client.read(path))

# Shell commands
show("echo", client.exec("echo hello from clove"))
show("pipe", client.exec("printf 'a\\\\nb\\\\nc\\\\n' | wc -l"))
show("pwd", client.exec("pwd", cwd="/tmp"))
show("ls_fail", client.exec("ls /definitely/not/here"))
started = time.time()
result = client.exec("sleep 1 && echo done", timeout=10)
result["elapsed"] = time.time() - started
show("sleep", result)

if PART == "files_exec":
    client.disconnect()
    sys.exit(0)

# Workers: unsandboxed, from a private temporary directory
client.register_name("compat-boss")
workdir = tempfile.mkdtemp(prefix="compat-workers-")
script = os.path.join(workdir, "worker.py")
with open(script, "w") as f:
    f.write(WORKER)
show("workdir_mode", oct(os.stat(workdir).st_mode & 0o777))
spawned = {}
spawned_at = {}
for name in ("compat-w1", "compat-w2"):
    spawned_at[name] = time.time()
    spawned[name] = client.spawn(name, script, sandboxed=False)
show("spawn", spawned)


def collect(pred, seconds):
    """Messages matching pred, polled for at most `seconds` (recv_messages does not block)."""
    got = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        for m in client.recv_messages().get("messages", []):
            if pred(m):
                got.append(m)
        if got:
            return got
        time.sleep(0.02)
    return got


up = {}
deadline = time.time() + 10
while len(up) < 2 and time.time() < deadline:
    for m in client.recv_messages().get("messages", []):
        if m["message"].get("type") == "up":
            up[m["from_name"]] = round(time.time() - spawned_at[m["from_name"]], 3)
    time.sleep(0.01)
show("workers_up", up)


def state(name):
    return [a.get("state") for a in client.list_agents() if a.get("name") == name]


paused = client.pause("compat-w1")
show("paused", {"ok": paused, "state": state("compat-w1")})
client.send_message({"type": "ping", "n": 1}, to_name="compat-w1")
client.send_message({"type": "ping", "n": 2}, to_name="compat-w2")
early = collect(lambda m: m["message"].get("type") == "pong", 0.8)
show("while_paused", [[m["from_name"], m["message"]["n"]] for m in early])
time.sleep(0.5)
early += [m for m in client.recv_messages().get("messages", []) if m["message"].get("type") == "pong"]
show("while_paused_all", sorted([m["from_name"], m["message"]["n"]] for m in early))
resumed = client.resume("compat-w1")
show("resumed", {"ok": resumed, "state": state("compat-w1")})
late = collect(lambda m: m["message"].get("type") == "pong", 5)
show("after_resume", [[m["from_name"], m["message"]["n"]] for m in late])
show("kill", [client.kill("compat-w1"), client.kill(agent_id=spawned["compat-w2"]["id"])])
time.sleep(0.3)
show("left", [a.get("name") for a in client.list_agents() if a.get("name", "").startswith("compat-w")])

# The audit log
log = client.get_audit_log(category="AGENT_LIFECYCLE", limit=100)
show("audit", {
    "success": log.get("success"),
    "count": log.get("count"),
    "events": [[e["event_type"], e.get("agent_name")] for e in log.get("entries", [])],
})

# Record a session and replay it
show("record_start", client.start_recording())
client.store("compat:counter", 1)
client.fetch("compat:counter")
client.store("compat:config", {"mode": "fast", "workers": 2})
client.fetch("compat:config")
client.store("compat:counter", 2)
client.fetch("compat:counter")
client.fetch("compat:missing")
show("record_stop", client.stop_recording())
status = client.get_recording_status(export=True)
show("recording", {k: v for k, v in status.items() if k != "recording_data"})
show("recording_data", json.loads(status["recording_data"]))
show("replay_start", client.start_replay(status["recording_data"]))
replay = {}
for _ in range(200):
    replay = client.get_replay_status()
    if replay.get("state") in ("completed", "error"):
        break
    time.sleep(0.05)
show("replay", replay)
client.disconnect()
'''


def write_program(root: str) -> str:
    """The program and nothing else in a fresh 0700 directory (``mktemp -d``), as a user keeps it."""
    d = tempfile.mkdtemp(prefix="compat-", dir=root)
    program = os.path.join(d, "program.py")
    with open(program, "w") as f:
        f.write(PROGRAM.replace("__WORKER__", repr(WORKER)))
    return program


def steps(output: str) -> dict:
    out = {}
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            d = json.loads(line)
            out[d["step"]] = d["value"]
    return out


def run_program(kernel, env_extra: dict | None = None) -> dict:
    """Runs PROGRAM as a plain script against the operator socket, the SDK on PYTHONPATH (installed)."""
    program = write_program(kernel.root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOVE_")}
    env["PYTHONPATH"] = str(SDK)
    env["TMPDIR"] = kernel.root  # its mkdtemp() (the workers' directory) goes away with the kernel's
    env.update(env_extra or {})
    p = subprocess.run(
        [PYTHON, program, kernel.socket], env=env, capture_output=True, text=True, timeout=120, cwd=kernel.root
    )
    assert p.returncode == 0, f"the program failed ({p.returncode}):\n{p.stdout}\n{p.stderr}\n{kernel.log()}"
    return steps(p.stdout)


def check_files_and_exec(s: dict) -> None:
    """What the file and shell part of PROGRAM must have printed, for an operator and an agent alike."""
    path = s["path"]
    assert s["write"] == {"success": True, "bytes_written": 11, "created": True}, s["write"]
    assert s["append"]["success"] is True and s["append"]["bytes_written"] == 12, s["append"]
    assert s["read"]["success"] is True, s["read"]
    assert s["read"]["content"] == "first line\nsecond line\n" and s["read"]["size"] == 23, s["read"]
    assert s["read_alias"] == "first line\nsecond line\n"
    assert path.startswith("/tmp/clove-compat-")

    assert s["echo"]["success"] is True and s["echo"]["exit_code"] == 0, s["echo"]
    assert s["echo"]["stdout"] == "hello from clove\n" and s["echo"]["stderr"] == "", s["echo"]
    assert s["pipe"]["success"] is True and s["pipe"]["stdout"].strip() == "3", s["pipe"]
    assert s["pwd"]["success"] is True and s["pwd"]["stdout"] == "/tmp\n", s["pwd"]
    ls = s["ls_fail"]
    assert ls["success"] is False and ls["exit_code"] > 0, ls
    # Difference: the public kernel merged stderr into stdout; ours keeps them apart, `output` is both.
    assert "No such file" in ls["stderr"] and ls["stdout"] == "", ls
    assert "No such file" in ls["output"], ls
    assert s["sleep"]["success"] is True and s["sleep"]["stdout"] == "done\n", s["sleep"]
    assert s["sleep"]["elapsed"] >= 0.9, s["sleep"]


def test_public_program_as_the_operator(kernel):
    s = run_program(kernel)
    try:
        check_files_and_exec(s)
        # An operator's file is the host's (the kernel's uid, no private /tmp).
        with open(s["path"]) as f:
            assert f.read() == "first line\nsecond line\n"
    finally:
        if "path" in s:
            Path(s["path"]).unlink(missing_ok=True)

    # Workers: spawned unsandboxed from a 0700 directory, each connected within 2 s.
    assert s["workdir_mode"] == "0o700"
    for name, r in s["spawn"].items():
        assert r["success"] is True and r["name"] == name and r["status"] == "running", r
        assert r["isolation"]["namespaces"]["pid"] is False, r  # sandboxed=False: a plain process
    assert set(s["workers_up"]) == {"compat-w1", "compat-w2"}, s["workers_up"]
    for name, secs in s["workers_up"].items():
        assert secs < 2.0, f"{name} connected after {secs} s"

    # Pause: the paused worker does not answer, the other does; resume: it answers what it was sent.
    assert s["paused"] == {"ok": True, "state": ["PAUSED"]}, s["paused"]
    assert s["while_paused_all"] == [["compat-w2", 2]], s["while_paused_all"]
    assert s["resumed"] == {"ok": True, "state": ["RUNNING"]}, s["resumed"]
    assert s["after_resume"] == [["compat-w1", 1]], s["after_resume"]
    assert s["kill"] == [True, True]
    assert s["left"] == [], s["left"]

    # The audit log: both spawns, the pause, the resume and both exits, by name.
    a = s["audit"]
    assert a["success"] is True and a["count"] == len(a["events"]), a
    events = [tuple(e) for e in a["events"]]
    for e in [
        ("AGENT_SPAWNED", "compat-w1"),
        ("AGENT_SPAWNED", "compat-w2"),
        ("AGENT_PAUSED", "compat-w1"),
        ("AGENT_RESUMED", "compat-w1"),
        ("AGENT_EXITED", "compat-w1"),
        ("AGENT_EXITED", "compat-w2"),
    ]:
        assert e in events, (e, events)
    assert events.index(("AGENT_PAUSED", "compat-w1")) < events.index(("AGENT_RESUMED", "compat-w1"))

    # Record and replay: 7 STORE/FETCH recorded, replayed to completion with no mismatch.
    assert s["record_start"]["success"] is True and s["record_start"]["recording"] is True, s["record_start"]
    assert s["record_stop"]["success"] is True and s["record_stop"]["entries_recorded"] == 7, s["record_stop"]
    rec = s["recording"]
    assert rec["success"] is True and rec["recording"] is False and rec["entry_count"] == 7, rec
    entries = s["recording_data"]
    assert [e["opcode_name"] for e in entries] == ["STORE", "FETCH"] * 3 + ["FETCH"], entries
    assert json.loads(entries[5]["response"])["value"] == 2
    assert s["replay_start"]["success"] is True and s["replay_start"]["total_entries"] == 7, s["replay_start"]
    r = s["replay"]
    assert r["state"] == "completed", r
    assert r["mismatches"] == 0 and r["entries_replayed"] == 7 and r["entries_skipped"] == 0, r
    assert r["progress_percent"] == 100, r


def test_public_program_files_and_exec_as_a_sandboxed_agent(kernel, op):
    """The same program, spawned as a sandboxed agent with default rights: files in its private /tmp,
    shell commands inside its sandbox (docs/protocol.md "Exec": the shell is allowed to a confined agent)."""
    program = write_program(kernel.root)  # 0700, root's: shared read-only with the agent
    assert stat.S_IMODE(os.stat(os.path.dirname(program)).st_mode) == 0o700
    sub = op.subscribe(["AGENT_EXITED"])
    assert sub["success"] is True
    r = op.spawn("compat-agent", program, env={"COMPAT_PART": "files_exec"})
    assert r["success"] is True, f"{r}\n{kernel.log()}"
    assert op.get_permissions(r["id"])["level"] == "standard"
    exited = None
    deadline = time.monotonic() + 60
    while exited is None and time.monotonic() < deadline:
        ev = op.wait_event(timeout=5)
        if ev and ev["type"] == "AGENT_EXITED" and ev["data"].get("agent_id") == r["id"]:
            exited = ev["data"]
    log = Path(kernel.data_dir, "logs", "compat-agent.log").read_text(errors="replace")
    assert exited is not None, f"the agent did not finish:\n{log}\n{kernel.log()}"
    assert exited["exit_code"] == 0, f"{exited}\n{log}"
    s = steps(log)
    check_files_and_exec(s)
    # Its /tmp is its own: the file is not the host's.
    assert not os.path.exists(s["path"]), "an agent's /tmp is private"


def test_documented_differences_from_the_public_sdk(kernel, op):
    # think(): the public SDK ran the model in the client and sent LLM_REPORT; ours sends THINK to the
    # kernel, which calls the operator's provider — none is configured here: not_found, with the reason.
    r = op.think("hello")
    assert r["success"] is False and r["code"] == "not_found", r
    assert "provider" in r["error"], r
    # LLM_REPORT stays for client-side calls, marked self-reported.
    r = op.llm_report(12)
    assert r["success"] is True and r["self_reported"] is True, r

    # EXEC without `async`: the public kernel's default was async (an accept reply); ours runs it.
    r = op.call_json(SyscallOp.SYS_EXEC, {"command": "echo sync"})
    assert r["success"] is True and r["stdout"] == "sync\n", r
    # async: true is accepted at once and its reply taken with ASYNC_RESULTS (ext; 0x80 is not served).
    r = op.call_json(SyscallOp.SYS_EXEC, {"command": "echo later", "async": True})
    assert r["success"] is True and r["async"] is True and r["status"] == "accepted", r
    res = op.async_results(10, timeout=10)
    assert res["count"] == 1 and res["results"][0]["request_id"] == r["request_id"], res
    assert res["results"][0]["result"]["stdout"] == "later\n", res
    assert json.loads(res["results"][0]["payload"])["stdout"] == "later\n"  # the public ASYNC_POLL's form

    # SPAWN replies carry `success` (the public kernel's had none); kill() is still a bool.
    d = tempfile.mkdtemp(prefix="compat-", dir=kernel.root)
    worker = os.path.join(d, "worker.py")
    with open(worker, "w") as f:
        f.write(WORKER)
    r = op.spawn("compat-d", worker, sandboxed=False)
    assert r["success"] is True and {"id", "name", "pid", "status", "restart_policy", "isolation"} <= set(r), r
    assert op.kill("compat-d") is True

    # REPLAY_START reads `recording_data`; the public SDK sent `recording`, which our kernel ignores: with
    # no `recording_data` it replays its own last recording — so the public wire form still works.
    assert op.start_recording()["success"] is True
    op.store("compat:d", "x")
    op.fetch("compat:d")
    assert op.stop_recording()["entries_recorded"] == 2
    data = op.get_recording_status(export=True)["recording_data"]
    r = op.call_json(SyscallOp.SYS_REPLAY_START, {"recording": data})
    assert r["success"] is True and r["total_entries"] == 2, r
    for _ in range(100):
        st = op.get_replay_status()
        if st["state"] in ("completed", "error"):
            break
        time.sleep(0.05)
    assert st["state"] == "completed" and st["mismatches"] == 0, st
    shutil.rmtree(d, ignore_errors=True)
