"""The shared byte-level vectors (protocol/vectors/frames.json) against the decoder and the encoder, and the
PUSH_BINARY payload vectors (``push_binary``) against decode_push_binary."""

import json
import struct
from pathlib import Path

import pytest

from clove_sdk.errors import BadMagicError, BadPushError, PayloadTooLargeError, ProtocolError
from clove_sdk.protocol import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    MAGIC,
    FrameDecoder,
    decode_push_binary,
    encode_frame,
)

from conftest import encode_push_binary

VECTORS_PATH = Path(__file__).resolve().parents[3] / "protocol" / "vectors" / "frames.json"
DOC = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VECTORS = DOC["vectors"]
ERRORS = {"bad_magic": BadMagicError, "payload_too_large": PayloadTooLargeError}


def expected_payload(f):
    return bytes.fromhex(f["payload_hex"]) if "payload_hex" in f else f["payload"].encode("utf-8")


def run(vector, chunks):
    dec = FrameDecoder(max_payload=vector.get("max_payload", DEFAULT_MAX_PAYLOAD))
    frames, error = [], None
    for chunk in chunks:
        try:
            frames += dec.feed(chunk)
        except ProtocolError as e:
            frames += e.frames
            error = e
            break
    # never more than one partial frame is held
    assert dec.buffered <= HEADER_SIZE + dec.max_payload
    return frames, error


def check(vector, frames, error):
    want = vector["frames"]
    assert len(frames) == len(want)
    for got, f in zip(frames, want):
        assert got.agent_id == f["agent_id"]
        assert got.opcode == f["opcode"]
        assert got.payload == expected_payload(f)
    if "error" in vector:
        assert error is not None, "expected error " + vector["error"]
        assert isinstance(error, ERRORS[vector["error"]])
        assert error.code == vector["error"]
    else:
        assert error is None


def test_constants_match_vectors():
    assert DOC["magic"] == MAGIC
    assert DOC["header_size"] == HEADER_SIZE
    assert DOC["default_max_payload"] == DEFAULT_MAX_PAYLOAD
    assert len(VECTORS) > 0


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decode_whole(vector):
    data = bytes.fromhex(vector["hex"])
    check(vector, *run(vector, [data]))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decode_byte_by_byte(vector):
    data = bytes.fromhex(vector["hex"])
    check(vector, *run(vector, [data[i : i + 1] for i in range(len(data))]))


ENCODE = [v for v in VECTORS if v.get("encode")]


@pytest.mark.parametrize("vector", ENCODE, ids=[v["name"] for v in ENCODE])
def test_encode(vector):
    (f,) = vector["frames"]
    payload = f["payload"] if "payload" in f else bytes.fromhex(f["payload_hex"])
    assert encode_frame(f["opcode"], payload, agent_id=f["agent_id"]).hex() == vector["hex"]
    # bytes and str payloads encode alike
    assert encode_frame(f["opcode"], expected_payload(f), agent_id=f["agent_id"]).hex() == vector["hex"]


def test_failed_decoder_stays_failed():
    dec = FrameDecoder()
    with pytest.raises(BadMagicError):
        dec.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(BadMagicError):
        dec.feed(encode_frame(0, b""))


def test_bad_magic_reported_on_first_wrong_byte():
    dec = FrameDecoder()
    assert dec.feed(b"TN") == []
    with pytest.raises(BadMagicError):
        dec.feed(b"X")


def test_many_frames_and_a_split_frame_across_chunks():
    frames = [encode_frame(0x20, '{"n":%d}' % i, agent_id=i) for i in range(50)]
    stream = b"".join(frames)
    dec = FrameDecoder()
    out = []
    for cut in range(0, len(stream), 37):
        out += dec.feed(stream[cut : cut + 37])
        assert dec.buffered < len(frames[0]) + 1
    assert [f.agent_id for f in out] == list(range(50))
    assert out[7].json() == {"n": 7}


def test_encoder_refuses_oversized_payload_when_limited():
    with pytest.raises(PayloadTooLargeError):
        encode_frame(0, b"x" * 5, max_payload=4)
    assert len(encode_frame(0, b"x" * 4, max_payload=4)) == HEADER_SIZE + 4


def test_opcode_table_matches_the_kernel():
    import re

    from clove_sdk.protocol import SyscallOp

    src = VECTORS_PATH.parents[2] / "kernel" / "protocol" / "opcodes.ts"
    if not src.exists():
        pytest.skip(f"{src} not found")
    table = {m.group(1): int(m.group(2), 16) for m in re.finditer(r"^\s+([A-Z_]+): 0x([0-9a-fA-F]+),", src.read_text(), re.M)}
    assert len(table) > 40
    for name, value in table.items():
        assert SyscallOp[name] == value, name
        assert SyscallOp["SYS_" + name] == value, name
    assert {m.log_name for m in SyscallOp} == set(table)


PUSH_BINARY = DOC["push_binary"]


@pytest.mark.parametrize("vector", PUSH_BINARY, ids=[v["name"] for v in PUSH_BINARY])
def test_decode_push_binary(vector):
    payload = bytes.fromhex(vector["hex"])
    if "error" in vector:
        with pytest.raises(BadPushError) as ei:
            decode_push_binary(payload)
        assert ei.value.kind == vector["error"]
        assert isinstance(ei.value, ProtocolError) and ei.value.code == "bad_push"
        return
    got = decode_push_binary(payload)
    assert [{k: m[k] for k in ("from", "from_name", "age_ms", "seq")} for m in got] == [
        {k: m[k] for k in ("from", "from_name", "age_ms", "seq")} for m in vector["messages"]
    ]
    assert [m["message"] for m in got] == [json.loads(m["message"]) for m in vector["messages"]]
    assert [m["bytes"] for m in got] == [m["message"].encode("utf-8") for m in vector["messages"]]
    assert all(type(m["bytes"]) is bytes for m in got)
    # a view or a bytearray of the payload decodes alike
    assert decode_push_binary(memoryview(payload)) == got == decode_push_binary(bytearray(payload))


ENCODE_PUSH = [v for v in PUSH_BINARY if v.get("encode")]


@pytest.mark.parametrize("vector", ENCODE_PUSH, ids=[v["name"] for v in ENCODE_PUSH])
def test_encode_push_binary(vector):
    # the tests' encoder (conftest), which the fake kernels push with, writes what the kernel writes
    assert encode_push_binary(vector["messages"]).hex() == vector["hex"]


def test_push_binary_vectors_cover_both_errors():
    assert {v["error"] for v in PUSH_BINARY if "error" in v} == {"truncated", "trailing_bytes"}
    assert any(v.get("encode") for v in PUSH_BINARY)


def test_push_binary_message_that_is_not_json():
    name, text = b"a", b"{nope"
    payload = struct.pack("<IIIQII", 1, 2, 0, 1, len(name), len(text)) + name + text
    with pytest.raises(BadPushError) as ei:
        decode_push_binary(payload)
    assert ei.value.kind == "not_json"


def test_push_binary_count_far_past_the_payload_fails_at_once():
    with pytest.raises(BadPushError) as ei:
        decode_push_binary(struct.pack("<I", 0xFFFFFFFF))
    assert ei.value.kind == "truncated"
    assert decode_push_binary(struct.pack("<I", 0)) == []
