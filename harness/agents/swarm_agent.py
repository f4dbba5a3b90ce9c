"""Swarm agent for the chaos harness (harness/swarm.ts). Python; stdlib + the Clove SDK only.

Every agent sends numbered data messages to its peers (round-robin, one every SWARM_INTERVAL_MS),
does a little real work for every message it receives (a sha256 chain), and reports to the collector
exactly what it sent and received. Lossless accounting (same design as kernel/testdata/swarm_worker.py):

* RECV with a lease: what a RECV returned stays leased until the next RECV acknowledges it; if the
  agent dies first, the kernel puts it back and the restarted agent receives it again (at-least-once;
  the collector deduplicates by (src, epoch, n)).
* The "tick" report (what was received in this batch + what was sent) is sent to the collector
  BEFORE the next RECV, so a receipt is never acknowledged before it was reported.
* A message counts as sent only once the kernel accepted it. Each process life has a random `epoch`,
  so numbering restarts at 1 after a restart without any persisted counter, and keys never collide
  (pids do not work as epochs: in a pid namespace every agent is pid 1).

Commands (messages with a "cmd" field):
  {"cmd": "stop"}                          stop sending; keep receiving and reporting
  {"cmd": "slow", "ms": 200, "max": 1}     become a slow consumer: take `max` messages per RECV, sleep `ms`
  SWARM_CRASH_ON_START=K (env) makes every life inject fault K right after its "up" report (crash loop).
  {"cmd": "fault", "kind": K, "fid": F, ...}  acknowledge the lease, report the fault, then inject it:
      segv       a real segfault (ctypes.string_at(0))
      exception  an unhandled exception (exit code 1)
      leak       allocate (and touch) memory until the cgroup limit kills us; self-bounded: at
                 `cap_mb` (default 300) MiB we abort() ourselves, so plain mode is safe
      hang       sleep forever in the main loop: no syscalls, no heartbeats (the watchdog must act)
      cpu        spin forever (the watchdog must act; the cgroup cpu quota throttles it)
      forkbomb   fork idle children until fork fails (pids limit) or `max_forks` is reached, then die
"""
import hashlib
import json
import os
import sys
import time

from clove_sdk import CloveClient
from clove_sdk.protocol import SyscallOp

NAME = os.environ["CLOVE_AGENT_NAME"]
PREFIX = os.environ.get("SWARM_PREFIX", "a-")
SIZE = int(os.environ.get("SWARM_SIZE", "1"))
INTERVAL = int(os.environ.get("SWARM_INTERVAL_MS", "500")) / 1000.0
COLLECTOR = os.environ.get("SWARM_COLLECTOR", "collector")
FOCUS = os.environ.get("SWARM_FOCUS", "")  # if set: send every data message to this agent
WORK = int(os.environ.get("SWARM_WORK", "200"))  # sha256 rounds per received message
EPOCH = os.urandom(6).hex()
PID = os.getpid()

me = int(NAME[len(PREFIX):]) if NAME.startswith(PREFIX) and NAME[len(PREFIX):].isdigit() else 0
if FOCUS:
    peers = [FOCUS] if FOCUS != NAME else []
else:
    # Start with the next agent, so that at every turn each agent receives from exactly one peer.
    peers = [f"{PREFIX}{(me + k) % SIZE}" for k in range(1, SIZE)]

c = CloveClient(strict=False)
c.connect()


def report(msg):
    """Sends a report to the collector; retries on a full mailbox (reports must never be dropped), and on
    not_found for up to 30 s: in a cluster, a node learns of a name claimed on another node through its
    watch, later under load (docs/cluster.md "Limits"); nothing was delivered, so sending again is safe."""
    msg.setdefault("name", NAME)
    msg.setdefault("e", EPOCH)
    unknown_since = None
    for attempt in range(2000):
        r = c.send_message(msg, to_name=COLLECTOR)
        if r.get("success"):
            return True
        code = r.get("code")
        if code == "not_found":
            now = time.monotonic()
            unknown_since = unknown_since or now
            if now - unknown_since > 30:
                print("report failed: the collector stayed unknown for 30 s:", r, flush=True)
                return False
        elif code != "mailbox_full":
            print("report failed:", r, flush=True)
            return False
        time.sleep(min(0.005 * (attempt + 1), 0.1))
    print("report gave up: collector mailbox full", flush=True)
    return False


def work(m):
    h = f"{m.get('src')}:{m.get('e')}:{m.get('n')}".encode()
    for _ in range(WORK):
        h = hashlib.sha256(h).digest()
    return h[0]


def fault(cmd):
    kind = cmd.get("kind")
    if kind == "segv":
        import ctypes

        ctypes.string_at(0)  # SIGSEGV: reads address 0
    elif kind == "exception":
        raise RuntimeError("chaos: injected exception")
    elif kind == "leak":
        cap = int(cmd.get("cap_mb", 300)) * 1024 * 1024
        step = 8 * 1024 * 1024
        hoard = []
        while sum(len(b) for b in hoard) < cap:
            hoard.append(b"\x01" * step)  # filled, so the pages are really used
            time.sleep(0.01)
        print(f"leak: reached the self-imposed cap of {cap >> 20} MiB without being stopped; aborting", flush=True)
        os.abort()
    elif kind == "hang":
        while True:
            time.sleep(3600)
    elif kind == "cpu":
        x = 0
        while True:
            x += 1
    elif kind == "forkbomb":
        limit = int(cmd.get("max_forks", 32))
        kids = 0
        err = None
        while kids < limit:
            try:
                pid = os.fork()
            except OSError as e:  # EAGAIN at the pids limit
                err = e
                break
            if pid == 0:
                time.sleep(600)  # an idle child; it dies with the agent's process group / cgroup
                os._exit(0)
            kids += 1
        print(f"forkbomb: {kids} children, stopped by {err or 'the count limit'}", flush=True)
        raise SystemExit(3)
    else:
        raise RuntimeError(f"unknown fault kind {kind!r}")


report({"t": "up", "pid": PID, "rt": "py"})
if os.environ.get("SWARM_CRASH_ON_START"):  # a crash loop: every life dies right after saying hello
    fault({"kind": os.environ["SWARM_CRASH_ON_START"]})

turn = 0
n = 0
stopped = False
slow_ms = 0
take_max = 100
next_send = time.monotonic()
while True:
    now = time.monotonic()
    timeout_ms = 1000 if stopped or not peers else max(0, int((next_send - now) * 1000))
    reply = c.call_json(
        SyscallOp.SYS_RECV, {"max": take_max, "wait": True, "timeout_ms": timeout_ms, "lease": True}, wait=timeout_ms / 1000
    )
    if not reply.get("success"):
        report({"t": "error", "op": "recv", "code": reply.get("code"), "error": reply.get("error")})
    got = []
    cmds = []
    for m in reply.get("messages", []):
        body = m.get("message")
        if isinstance(body, dict) and body.get("t") == "d":
            work(body)
            got.append([body.get("src"), body.get("e"), body.get("n")])
        elif isinstance(body, dict) and "cmd" in body:
            cmds.append(body)
    if slow_ms:
        time.sleep(slow_ms / 1000)

    sent = []
    errors = []
    if not stopped and peers and time.monotonic() >= next_send:
        peer = peers[turn % len(peers)]
        r = c.send_message({"t": "d", "src": NAME, "e": EPOCH, "n": n + 1}, to_name=peer)
        if r.get("success"):
            n += 1
            turn += 1
            sent.append([peer, n])
        else:
            errors.append({"op": "send", "dst": peer, "code": r.get("code"), "error": r.get("error")})
        next_send += INTERVAL
        if next_send < time.monotonic():
            next_send = time.monotonic() + INTERVAL

    the_fault = None
    just_stopped = False
    for cmd in cmds:
        if cmd["cmd"] == "stop" and not stopped:
            stopped = just_stopped = True
        elif cmd["cmd"] == "slow":
            slow_ms = int(cmd.get("ms", 200))
            take_max = int(cmd.get("max", 1))
        elif cmd["cmd"] == "fault" and the_fault is None:
            the_fault = cmd
    if got or sent:
        report({"t": "tick", "got": got, "sent": sent})
    for e in errors:
        report({"t": "error", **e})
    if just_stopped:
        report({"t": "stopped", "n": n})
    if the_fault is not None:
        # Acknowledge the lease first (RECV max 0), or the restarted agent would get the fault again.
        c.call_json(SyscallOp.SYS_RECV, {"max": 0, "lease": True})
        report({"t": "fault", "kind": the_fault.get("kind"), "fid": the_fault.get("fid"), "ts": time.time() * 1000})
        fault(the_fault)
