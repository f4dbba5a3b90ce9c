"""Agent for the journal family's tests. Says `{"type": "up", "restarts": n}` to REPORT_TO when it
starts, then obeys messages from anyone and answers the sender:

- {"cmd": "call", "op": N, "payload": {...}}: one syscall on its main connection, the reply;
- {"cmd": "call2", "op": N, "payload": {...}}: the same on a second connection of its own;
- {"cmd": "close2"}: closes the second connection (its steps close with it);
- {"cmd": "exit", "code": N}: exits with that code (after answering).
"""
import json
import os
import sys

from clove_sdk import CloveClient

c = CloveClient()
c.connect()
second = None
report_to = int(os.environ.get("REPORT_TO", "0"))
if report_to:
    c.send_message({"type": "up", "hello": c.hello()}, to=report_to)

while True:
    m = c.wait_message(timeout=30)
    if m is None:
        continue
    cmd = m["message"] if isinstance(m["message"], dict) else {}
    kind = cmd.get("cmd")
    if kind == "call":
        out = c.call_json(int(cmd["op"]), cmd.get("payload", {}))
    elif kind == "call2":
        if second is None:
            second = CloveClient()
            second.connect()
        out = second.call_json(int(cmd["op"]), cmd.get("payload", {}))
    elif kind == "close2":
        if second is not None:
            second.close()
            second = None
        out = {"closed": True}
    elif kind == "exit":
        c.send_message({"type": "answer", "to_cmd": kind, "out": {"exiting": cmd.get("code", 0)}}, to=m["from"])
        sys.stdout.flush()
        os._exit(int(cmd.get("code", 0)))
    else:
        out = {"echo": m["message"]}
    c.send_message({"type": "answer", "to_cmd": kind, "out": out}, to=m["from"])
