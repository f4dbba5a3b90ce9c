"""Restart-benchmark agent: announces "ready" as soon as it can serve, then blocks.

READY_VIA selects how it says so (the bench picks one per series):
  kernel  - raw protocol (socket + struct + json only): connects to $CLOVE_SOCKET, SENDs {"ready": pid}
            to the name "bench" (the bench waits in a blocking RECV), then blocks in RECV.
  sdk     - the same through the Python SDK (clove_sdk.CloveClient), as real agents do.
Every signal carries t_main, the wall-clock ms at which the script started running, so the bench can
split a restart into "SIGKILL → interpreter up" and "interpreter up → ready received".

  socket  - writes "$READY_NAME <pid> <t_main>\n" to the Unix socket $READY_SOCKET the bench listens on, then blocks
            reading it. No kernel involved: the same script and signal serve PM2 and Clove alike.
"""
import time

T_MAIN = time.time() * 1000.0  # epoch ms when the script starts running (interpreter is up)

import os  # noqa: E402

via = os.environ.get("READY_VIA", "kernel")
pid = os.getpid()

# Each way imports only what it uses: the SDK series pays for the SDK's imports, not for `socket` too.
if via == "socket":
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["READY_SOCKET"])
    s.sendall(("%s %d %.3f\n" % (os.environ.get("READY_NAME", "agent"), pid, T_MAIN)).encode())
    while s.recv(4096):
        pass
elif via == "sdk":
    from clove_sdk import CloveClient

    c = CloveClient()
    c.send_message({"ready": pid, "t_main": T_MAIN}, to_name="bench")
    while True:
        c.wait_message(timeout=None)
else:
    import json
    import socket
    import struct

    HDR = struct.Struct("<IIBQ")
    MAGIC = 0x41474E54

    def frame(op, obj):
        body = json.dumps(obj).encode()
        return HDR.pack(MAGIC, 0, op, len(body)) + body

    def reply(s):
        buf = b""
        while len(buf) < 17:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit(1)
            buf += chunk
        _, _, _, n = HDR.unpack_from(buf)
        while len(buf) < 17 + n:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit(1)
            buf += chunk
        return buf[17 : 17 + n]

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["CLOVE_SOCKET"])
    s.sendall(frame(0x20, {"to_name": "bench", "message": {"ready": pid, "t_main": T_MAIN}}))
    reply(s)
    while True:
        s.sendall(frame(0x21, {"max": 10, "wait": True, "timeout_ms": 300000}))
        reply(s)
