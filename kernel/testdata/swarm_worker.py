"""Swarm worker for the kernel's chaos tests.

Sends numbered messages round-robin to its peers (w-0 … w-(N-1)) and reports, for every RECV batch,
exactly which messages it received to the collector (the test). Receives under a lease, so a message it
took but had not reported when it was SIGKILLed is redelivered after the restart (at-least-once; the
collector deduplicates by (src, n)). Any error it sees is reported too.

argv: N (swarm size), send interval in ms
"""
import os
import sys
import time

from clove_sdk import CloveClient
from clove_sdk.protocol import SyscallOp

name = os.environ["CLOVE_AGENT_NAME"]
size = int(sys.argv[1])
interval = int(sys.argv[2]) / 1000.0
me = int(name.split("-")[1])
peers = [f"w-{i}" for i in range(size) if i != me]

c = CloveClient(strict=False)
c.connect()
# Per-destination counters survive restarts in the agent's own state scope.
state = c.fetch("counters", scope="agent")
counters = state.get("value") or {p: 0 for p in peers}
c.send_message({"type": "up", "name": name, "agent_id": c.hello()["agent_id"]}, to_name="collector")
if not c.fetch("go", scope="agent").get("value"):
    # A first life waits for the test's "go", sent once every worker is spawned: a peer sent to before its
    # SPAWN would be not_found, rightly, and counted as an error. Nobody sends data before it. A restarted
    # worker (the flag is in its state) goes on at once.
    while not any(m.get("message") == "go" for m in c.recv_messages(10, timeout=1.0).get("messages", [])):
        pass
    c.store("go", True, scope="agent")

turn = 0
stopped = False
while True:
    reply = c.call_json(SyscallOp.SYS_RECV, {"max": 100, "wait": True, "timeout_ms": int(interval * 1000), "lease": True})
    if not reply.get("success"):
        c.send_message({"type": "error", "name": name, "op": "recv", "reply": reply}, to_name="collector")
    got = [
        [m["message"]["src"], m["message"]["n"]]
        for m in reply.get("messages", [])
        if isinstance(m.get("message"), dict) and m["message"].get("type") == "data"
    ]
    if any(m.get("message") == "stop" for m in reply.get("messages", [])):
        stopped = True
    if got:
        r = c.send_message({"type": "recv", "name": name, "got": got}, to_name="collector")
        if not r.get("success"):
            print("report failed", r, flush=True)
    if stopped:
        continue
    peer = peers[turn % len(peers)]
    turn += 1
    n = counters[peer] + 1
    # Count the message as sent only once the kernel accepted it; persist before reporting.
    r = c.send_message({"type": "data", "src": name, "n": n}, to_name=peer)
    if r.get("success"):
        counters[peer] = n
        c.store("counters", counters, scope="agent")
        c.send_message({"type": "sent", "name": name, "dst": peer, "n": n}, to_name="collector")
    else:
        c.send_message({"type": "error", "name": name, "op": "send", "dst": peer, "reply": r}, to_name="collector")
