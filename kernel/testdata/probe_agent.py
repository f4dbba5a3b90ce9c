"""Probe agent for the kernel's tests: reports who it is, then obeys commands sent by the operator.

Commands (messages from anyone): {"cmd": "hello"}, {"cmd": "env"}, {"cmd": "whoami"},
{"cmd": "write"|"read", "path": P, "text": T}, {"cmd": "raw", "op": N,
"payload": {...}, "header_id": N} (sends a frame with a forged header id), {"cmd": "exit", "code": N},
{"cmd": "spawn", ...}, {"cmd": "call", "op": N, "payload": {...}}. Every answer goes to the sender.
"""
import json
import os
import socket
import struct
import sys

from clove_sdk import CloveClient

c = CloveClient()
c.connect()
report_to = int(os.environ.get("REPORT_TO", "0"))
if report_to:
    c.send_message({"type": "up", "hello": c.hello(), "argv": sys.argv[1:]}, to=report_to)


def raw_call(op, payload, header_id):
    """One request on a fresh connection with a forged agent id in the header."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["CLOVE_SOCKET"])
    body = json.dumps(payload).encode()
    s.sendall(struct.pack("<IIBQ", 0x41474E54, header_id, op, len(body)) + body)
    head = b""
    while len(head) < 17:
        head += s.recv(17 - len(head))
    magic, agent_id, opcode, size = struct.unpack("<IIBQ", head)
    data = b""
    while len(data) < size:
        data += s.recv(size - len(data))
    s.close()
    return {"header_agent_id": agent_id, "reply": json.loads(data)}


while True:
    m = c.wait_message(timeout=30)
    if m is None:
        continue
    cmd = m["message"] if isinstance(m["message"], dict) else {}
    kind = cmd.get("cmd")
    if kind == "hello":
        out = c.hello()
    elif kind == "env":
        out = dict(os.environ)
    elif kind == "raw":
        out = raw_call(cmd["op"], cmd.get("payload", {}), cmd.get("header_id", 0))
    elif kind == "call":
        out = c.call_json(cmd["op"], cmd.get("payload", {}))
    elif kind == "whoami":
        out = {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd()}
    elif kind == "write":
        with open(cmd["path"], "w") as f:
            f.write(cmd.get("text", ""))
        out = {"ok": True}
    elif kind == "read":
        try:
            with open(cmd["path"]) as f:
                out = {"ok": True, "text": f.read()}
        except OSError as e:
            out = {"ok": False, "errno": e.errno, "error": str(e)}
    elif kind == "exit":
        sys.exit(cmd.get("code", 0))
    else:
        out = {"echo": m["message"]}
    c.send_message({"type": "answer", "to_cmd": kind, "out": out}, to=m["from"])
