"""The hostile agent of the security suite (kernel/security/security.test.ts). Stdlib + the Clove SDK.

It announces itself to REPORT_TO ({"t": "up", name, id, uid, cwd, home}), then serves the test's
commands, one message each, and answers {"t": "answer", "id", "ok", "result" | "error"} to REPORT_TO:

* {"do": "py", "code": "..."}: runs Python with ``c`` (its client), ``raw`` (below) and the stdlib
  modules it imports in scope; the answer is what the code left in ``result``. The attempts are written
  in the test, next to what they must get, so that each reads as one line of intent.
* ``raw(opcode, payload, header_id)``: one request on a fresh connection whose frame header carries
  ``header_id`` as its ``agent_id`` (a forged sender): {"header_agent_id", "reply"}.
"""
import base64
import errno
import json
import os
import shutil
import socket
import sys
import threading
import time

from clove_sdk import CloveClient
from clove_sdk.protocol import FrameDecoder, SyscallOp, encode_frame

c = CloveClient(timeout=90)
c.connect()
me = c.hello()
REPORT_TO = int(os.environ["REPORT_TO"])


def raw(opcode, payload, header_id):
    """One request whose frame header names ``header_id`` as its sender; returns the reply's header id
    and body."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(os.environ["CLOVE_SOCKET"])
        s.sendall(encode_frame(int(opcode), json.dumps(payload), header_id))
        dec = FrameDecoder()
        frames = []
        while not frames:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("the kernel closed the connection")
            frames = dec.feed(chunk)
        return {"header_agent_id": frames[0].agent_id, "reply": frames[0].json()}
    finally:
        s.close()


def os_error(fn):
    """Runs fn() inside this process (not through the kernel): 'ok', or the errno name it failed with."""
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


c.send_message(
    {
        "t": "up",
        "name": me["name"],
        "id": me["agent_id"],
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "home": os.environ.get("HOME"),
    },
    to=REPORT_TO,
)

while True:
    m = c.wait_message(timeout=None)
    if m is None:
        continue
    cmd = m["message"]
    if not isinstance(cmd, dict) or cmd.get("do") != "py":
        continue
    scope = {
        "c": c,
        "raw": raw,
        "os_error": os_error,
        "SyscallOp": SyscallOp,
        "base64": base64,
        "json": json,
        "os": os,
        "shutil": shutil,
        "sys": sys,
        "threading": threading,
        "time": time,
        "result": None,
    }
    try:
        exec(cmd["code"], scope)
        out = {"ok": True, "result": scope["result"]}
    except Exception as e:  # report, keep serving
        out = {"ok": False, "error": repr(e)}
    out.update({"t": "answer", "id": cmd.get("id")})
    c.send_message(out, to=REPORT_TO)
