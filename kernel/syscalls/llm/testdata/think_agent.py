"""Agent for the llm family's tests. Reports `{"type": "up"}` to REPORT_TO, then obeys messages:

- {"cmd": "env"}: its environment;
- {"cmd": "think", "payload": {...}}: one THINK, the reply;
- {"cmd": "call", "op": N, "payload": {...}}: one call of opcode N (THINK_STREAM, …), the reply;
- {"cmd": "exit"}: answers, then exits (status 0);
- {"cmd": "flood", "conns": C, "per_conn": N, "payload": {...}}: opens C connections and writes N THINK
  frames on each at once (pipelined; the prompt gets " A-<conn>-<i>" appended), then reads every reply:
  `{"results": [{"conn", "i", "success", "code", "budget", "content", "t_ms"}], "elapsed_ms"}`.

Every answer goes to the sender.
"""
import json
import os
import selectors
import socket
import struct
import time

from clove_sdk import CloveClient

THINK = 0x01
MAGIC = 0x41474E54

c = CloveClient()
c.connect()
report_to = int(os.environ.get("REPORT_TO", "0"))
if report_to:
    c.send_message({"type": "up", "hello": c.hello()}, to=report_to)


def frame(op, payload):
    body = json.dumps(payload).encode()
    return struct.pack("<IIBQ", MAGIC, 0, op, len(body)) + body


def flood(conns, per_conn, payload):
    sel = selectors.DefaultSelector()
    state = {}
    start = time.monotonic()
    for k in range(conns):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.environ["CLOVE_SOCKET"])
        data = b"".join(
            frame(THINK, dict(payload, prompt=f"{payload.get('prompt', '')} A-{k}-{i}")) for i in range(per_conn)
        )
        s.sendall(data)
        s.setblocking(False)
        state[s] = {"conn": k, "buf": b"", "got": 0}
        sel.register(s, selectors.EVENT_READ)
    results = []
    left = conns
    while left:
        for key, _ in sel.select(timeout=60):
            s = key.fileobj
            st = state[s]
            chunk = s.recv(65536)
            if not chunk:
                sel.unregister(s)
                s.close()
                left -= 1
                continue
            st["buf"] += chunk
            while len(st["buf"]) >= 17:
                _magic, _aid, _op, size = struct.unpack("<IIBQ", st["buf"][:17])
                if len(st["buf"]) < 17 + size:
                    break
                reply = json.loads(st["buf"][17 : 17 + size])
                st["buf"] = st["buf"][17 + size :]
                results.append(
                    {
                        "conn": st["conn"],
                        "i": st["got"],
                        "success": reply.get("success"),
                        "code": reply.get("code"),
                        "budget": reply.get("budget"),
                        "content": reply.get("content"),
                        "t_ms": round((time.monotonic() - start) * 1000),
                    }
                )
                st["got"] += 1
                if st["got"] == per_conn:
                    sel.unregister(s)
                    s.close()
                    left -= 1
                    break
    return {"results": results, "elapsed_ms": round((time.monotonic() - start) * 1000)}


while True:
    m = c.wait_message(timeout=30)
    if m is None:
        continue
    cmd = m["message"] if isinstance(m["message"], dict) else {}
    kind = cmd.get("cmd")
    if kind == "env":
        out = dict(os.environ)
    elif kind == "think":
        out = c.call_json(THINK, cmd.get("payload", {}))
    elif kind == "call":
        out = c.call_json(int(cmd["op"]), cmd.get("payload", {}))
    elif kind == "flood":
        out = flood(cmd["conns"], cmd["per_conn"], cmd.get("payload", {}))
    else:
        out = {"echo": m["message"]}
    c.send_message({"type": "answer", "to_cmd": kind, "out": out}, to=m["from"])
    if kind == "exit":
        break
