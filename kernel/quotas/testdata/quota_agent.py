"""Agent for the quota tests. Reports `{"type": "up"}` to REPORT_TO, then obeys messages:

- {"cmd": "call", "op": N, "payload": {...}}: one syscall, its reply (errors included);
- {"cmd": "alloc", "mb": N}: allocates and touches N MiB more, and keeps them;
- {"cmd": "burn"}: starts a thread that spins on the CPU for good;
- {"cmd": "spawn", "payload": {...}}: SPAWN (its reply).

Every answer goes to the sender.
"""
import os
import threading

from clove_sdk import CloveClient
from clove_sdk.protocol import SyscallOp

c = CloveClient()
c.connect()
report_to = int(os.environ.get("REPORT_TO", "0"))
if report_to:
    c.send_message({"type": "up", "hello": c.hello()}, to=report_to)

kept = []


def spin():
    x = 0
    while True:
        x += 1


while True:
    m = c.wait_message(timeout=30)
    if m is None:
        continue
    cmd = m["message"] if isinstance(m["message"], dict) else {}
    kind = cmd.get("cmd")
    if kind == "call":
        out = c.call_json(cmd["op"], cmd.get("payload", {}), check=False)
    elif kind == "spawn":
        out = c.call_json(SyscallOp.SYS_SPAWN, cmd.get("payload", {}), check=False)
    elif kind == "alloc":
        b = bytearray(cmd["mb"] * 1024 * 1024)
        for i in range(0, len(b), 4096):
            b[i] = 1
        kept.append(b)
        out = {"ok": True, "held_mb": sum(len(k) for k in kept) // (1024 * 1024)}
    elif kind == "burn":
        threading.Thread(target=spin, daemon=True).start()
        out = {"ok": True}
    else:
        out = {"echo": m["message"]}
    c.send_message({"type": "answer", "to_cmd": kind, "out": out}, to=m["from"])
