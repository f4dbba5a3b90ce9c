"""Idle agent for the memory/CPU benchmarks (stdlib socket/struct only): connects to $CLOVE_SOCKET,
SENDs {"up": pid} to the name "bench", then blocks in RECV with the longest timeout, for ever."""
import os
import socket
import struct

HDR = struct.Struct("<IIBQ")


def frame(op, body):
    return HDR.pack(0x41474E54, 0, op, len(body)) + body


def reply(s):
    buf = b""
    while len(buf) < 17 or len(buf) < 17 + HDR.unpack_from(buf)[3]:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit(1)
        buf += chunk


s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ["CLOVE_SOCKET"])
s.sendall(frame(0x20, b'{"to_name":"bench","message":{"up":%d}}' % os.getpid()))
reply(s)
while True:
    s.sendall(frame(0x21, b'{"max":10,"wait":true,"timeout_ms":300000}'))
    reply(s)
