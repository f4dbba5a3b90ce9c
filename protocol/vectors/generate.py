#!/usr/bin/env python3
"""Regenerates frames.json with Python's struct module, independently of every Clove implementation.

The vectors are committed; run this only to add one, then review the diff by hand.
"""
import json
import struct
from pathlib import Path

MAGIC = 0x41474E54


def frame(agent_id: int, opcode: int, payload: bytes, size: int | None = None) -> bytes:
    return struct.pack("<IIBQ", MAGIC, agent_id, opcode, len(payload) if size is None else size) + payload


def text(agent_id, opcode, s):
    return {"agent_id": agent_id, "opcode": opcode, "payload": s}


vectors = []


def add(name, data: bytes, frames, error=None, encode=False, max_payload=None):
    v = {"name": name, "hex": data.hex(), "frames": frames}
    if error:
        v["error"] = error
    if encode:
        v["encode"] = True
    if max_payload is not None:
        v["max_payload"] = max_payload
    vectors.append(v)


add("hello, empty object payload", frame(0, 0xFE, b"{}"), [text(0, 0xFE, "{}")], encode=True)
add("noop with empty payload", frame(7, 0x00, b""), [text(7, 0, "")], encode=True)
p = b'{"to":3,"message":{"n":1}}'
add("send, agent id 0x01020304 is little-endian", frame(0x01020304, 0x20, p), [text(0x01020304, 0x20, p.decode())], encode=True)
p = '{"key":"é€"}'.encode()
add("utf-8 payload size counts bytes, not characters", frame(9, 0x30, p), [text(9, 0x30, p.decode())], encode=True)
add("maximum agent id, opcode 0xff (EXIT)", frame(0xFFFFFFFF, 0xFF, b""), [text(0xFFFFFFFF, 0xFF, "")], encode=True)
add(
    "two frames in one chunk",
    frame(1, 0x12, b"") + frame(1, 0xFE, b"{}"),
    [text(1, 0x12, ""), text(1, 0xFE, "{}")],
)
add("binary payload", frame(5, 0x00, b"\x00\x01\xff"), [{"agent_id": 5, "opcode": 0, "payload_hex": "0001ff"}])
add("unknown opcode still frames", frame(2, 0x13, b"x"), [text(2, 0x13, "x")])
add("incomplete header (16 bytes): no frame, no error", frame(0, 0xFE, b"{}")[:16], [])
add("full header, payload missing: no frame, no error", frame(0, 0xFE, b"{}")[:17], [])
add("one frame and half of the next", frame(1, 0, b"a") + frame(1, 0, b"bc")[:18], [text(1, 0, "a")])
add("bad magic", struct.pack("<IIBQ", 0xEFBEADDE, 0, 0xFE, 2) + b"{}", [], error="bad_magic")
add("valid frame then an HTTP request line", frame(0, 0, b"") + b"GET / HTTP/1.1\r\nHost: clove\r\n\r\n", [text(0, 0, "")], error="bad_magic")
add("size field over the limit (1 MiB + 1)", frame(0, 0x30, b"", size=1048577), [], error="payload_too_large")
add("exactly 1 MiB is within the limit (waits for the payload)", frame(0, 0x30, b"", size=1048576), [])
add("size field of 2^64-1", frame(0, 0x30, b"", size=2**64 - 1), [], error="payload_too_large")
add("custom limit of 4 bytes", frame(0, 0, b"hello"), [], error="payload_too_large", max_payload=4)
add("custom limit of 4 bytes, 4 bytes accepted", frame(0, 0, b"four"), [text(0, 0, "four")], max_payload=4)

# PUSH_BINARY (0x26) payloads: u32 count, then per message a 24-byte head (u32 from, u32 age_ms, u64 seq,
# u32 name length, u32 message length), the name, the message's JSON text.
push_binary = []


def item(frm: int, name: str, age_ms: int, seq: int, message: str) -> bytes:
    n, m = name.encode(), message.encode()
    return struct.pack("<IIQII", frm, age_ms, seq, len(n), len(m)) + n + m


def add_push(name, payload: bytes, messages=None, error=None):
    v = {"name": name, "hex": payload.hex()}
    if error:
        v["error"] = error
    else:
        v["messages"] = messages
        v["encode"] = True
    push_binary.append(v)


def msg(frm, name, age_ms, seq, message):
    return {"from": frm, "from_name": name, "age_ms": age_ms, "seq": seq, "message": message}


one = item(7, "alice", 3, 1, '{"n":1}')
add_push("one message", struct.pack("<I", 1) + one, [msg(7, "alice", 3, 1, '{"n":1}')])
two = item(0x01020304, "é€", 0, 2**40 + 5, '"x"')
add_push(
    "two messages, a UTF-8 name, a seq past 2^32",
    struct.pack("<I", 2) + one + two,
    [msg(7, "alice", 3, 1, '{"n":1}'), msg(0x01020304, "é€", 0, 2**40 + 5, '"x"')],
)
add_push("an empty name, a message of UTF-8 text", struct.pack("<I", 1) + item(1, "", 9, 3, '"é"'), [msg(1, "", 9, 3, '"é"')])
add_push("no count", b"\x01\x00", error="truncated")
add_push("a head cut short", struct.pack("<I", 1) + one[:20], error="truncated")
add_push("a message longer than the payload", struct.pack("<I", 1) + one[:-1], error="truncated")
add_push("a count larger than the items", struct.pack("<I", 2) + one, error="truncated")
add_push("bytes after the last item", struct.pack("<I", 1) + one + b"\x00", error="trailing_bytes")

doc = {
    "description": (
        "Byte-level test vectors for the Clove wire protocol, read by every implementation (kernel, TypeScript "
        "SDK, Python SDK). `hex` is a byte stream; `frames` are the frames a decoder yields from it (payload as "
        "UTF-8 text, or payload_hex); `error` is the framing error it reports after those frames; `max_payload` "
        "is the decoder limit (default 1048576); `encode: true` marks single-frame vectors an encoder must "
        "reproduce byte for byte. A decoder must give the same result whether the stream arrives whole or one "
        "byte at a time. Generated by generate.py with Python's struct module."
    ),
    "magic": MAGIC,
    "header_size": 17,
    "default_max_payload": 1048576,
    "vectors": vectors,
    "push_binary_description": (
        "PUSH_BINARY (0x26) payloads: `hex` is a payload; `messages` what a decoder yields from it (`message` as "
        "the JSON text, byte for byte), or `error` (`truncated`: the payload ends inside the count, a head or a "
        "name or message it announces; `trailing_bytes`: bytes after the last item). `encode: true`: an encoder "
        "of these messages must reproduce the payload byte for byte."
    ),
    "push_binary": push_binary,
}
Path(__file__).with_name("frames.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
