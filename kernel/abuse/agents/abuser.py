"""The abusers of the abuse suite (kernel/abuse/abuse.test.ts): one hostile agent, ABUSE_CASE picks the
abuse. Stdlib + the Clove SDK only (its framing helpers, and raw sockets where the SDK would be too
polite).

Each case abuses for at most ABUSE_SECONDS (or until its count is reached), then reports what the
kernel answered — {"t": "report", "case": …, "codes": {code: n}, "budgets": {budget: n},
"samples": {code: first error reply}, …} — to REPORT_TO; should that SEND be refused (its own budgets
spent), it prints the report to its log instead ("ABUSE-REPORT …"). Then it keeps abusing
("sustain") until the operator kills it (a safety stop after SUSTAIN_SECONDS), so that the operator's
connect-and-kill happens under fire.
"""
import json
import os
import socket
import sys
import time
from collections import Counter, deque

from clove_sdk import CloveClient
from clove_sdk.protocol import FrameDecoder, SyscallOp, encode_frame

CASE = os.environ["ABUSE_CASE"]
NAME = os.environ["CLOVE_AGENT_NAME"]
REPORT_TO = int(os.environ["REPORT_TO"])
SOCK = os.environ["CLOVE_SOCKET"]
SECONDS = float(os.environ.get("ABUSE_SECONDS", "2.5"))
SUSTAIN = float(os.environ.get("SUSTAIN_SECONDS", "60"))
T0 = time.monotonic()


# Every error code the kernel answered this process with, whatever the call (reported as "all_codes").
SEEN = Counter()


def seen(r):
    if isinstance(r, dict) and r.get("success") is False:
        SEEN[str(r.get("code"))] += 1
    return r


def deadline():
    return time.monotonic() - T0 >= SECONDS


def enc(op, payload):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload, separators=(",", ":"))
    return encode_frame(op, body)


class Raw:
    """A bare connection: frames written in bulk (pipelined), replies read in order."""

    def __init__(self, timeout=30.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(SOCK)
        self.dec = FrameDecoder(max_payload=1 << 40)
        self.pending = deque()

    def frame(self):
        while not self.pending:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the kernel closed the connection")
            self.pending.extend(self.dec.feed(chunk))
        return self.pending.popleft()

    def calls(self, frames):
        """Writes every frame at once, then reads one reply per frame (parsed JSON)."""
        self.s.sendall(b"".join(frames))
        out = []
        for _ in frames:
            f = self.frame()
            try:
                out.append(seen(json.loads(f.payload)))
            except ValueError:
                text = f.payload[:200].decode("utf-8", "replace")
                out.append({"success": False, "code": "unparsable_reply", "error": text})
        return out

    def call(self, op, payload):
        return self.calls([enc(op, payload)])[0]

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

def _errname(e):
    import errno

    if isinstance(e, socket.timeout):
        return "timeout"
    if e.errno is None:
        return type(e).__name__
    return errno.errorcode.get(e.errno, str(e.errno))


class Tally:
    """What the kernel answered: successes, error codes, the budgets named, one sample reply per code."""

    def __init__(self):
        self.ok = 0
        self.codes = Counter()
        self.budgets = Counter()
        self.samples = {}

    def add(self, r):
        if isinstance(r, dict) and r.get("success") is False:
            code = str(r.get("code"))
            self.codes[code] += 1
            if code == "quota_exceeded":
                self.budgets[str(r.get("budget"))] += 1
            self.samples.setdefault(code, {k: v for k, v in r.items()})
        elif isinstance(r, dict) and "error" in r and "success" not in r:
            self.codes["?"] += 1
            self.samples.setdefault("?", r)
        else:
            self.ok += 1
        return r

    def merge(self, d):
        self.ok += d.get("ok", 0)
        self.codes.update(d.get("codes", {}))
        self.budgets.update(d.get("budgets", {}))
        for k, v in d.get("samples", {}).items():
            self.samples.setdefault(k, v)

    def dump(self):
        return {
            "ok": self.ok,
            "codes": dict(self.codes),
            "budgets": dict(self.budgets),
            "samples": self.samples,
        }


client = CloveClient(timeout=30)
client.connect()
ME = client.hello()["agent_id"]


def report(**fields):
    """SENDs the report; if that is refused (the abuser's own budgets are spent), prints it to the log."""
    elapsed_ms = int((time.monotonic() - T0) * 1000)
    body = {
        "t": "report",
        "case": CASE,
        "name": NAME,
        "id": ME,
        "elapsed_ms": elapsed_ms,
        "all_codes": dict(SEEN),
        **fields,
    }
    try:
        r = client.send_message(body, to=REPORT_TO)
        why = None if r.get("success") else "refused: " + json.dumps(r)
    except Exception as e:
        why = f"failed: {e!r}"
    if why:
        print(f"report SEND {why}", flush=True)
        print("ABUSE-REPORT " + json.dumps(body), flush=True)
    else:
        print("report sent", flush=True)


def sustain(step):
    """Keeps abusing until killed (bounded by SUSTAIN seconds)."""
    end = time.monotonic() + SUSTAIN
    while time.monotonic() < end:
        try:
            step()
        except Exception as e:  # the kernel may refuse or hang up on anything now; keep going
            print(f"sustain: {e!r}", flush=True)
            time.sleep(0.05)
    print("sustain: safety stop, nobody killed me", flush=True)
    sys.exit(3)


# ---------------------------------------------------------------------------------------------- cases


def case_mailboxes():
    """Near-1-MiB messages SENT in a loop to four idle agents."""
    targets = os.environ["TARGETS"].split(",")
    blob = "x" * 1_000_000
    frames = [enc(SyscallOp.SYS_SEND, {"to_name": t, "message": blob}) for t in targets]
    raw = Raw()
    t = Tally()
    i = 0
    # Until the deadline, and past it until the first refusal (at most 100 sends: 33 pass the 32-MiB
    # outbox budget): on a loaded machine the deadline alone may come before any limit is reached.
    while not deadline() or (not t.codes and i < 100):
        t.add(raw.calls([frames[i % len(frames)]])[0])
        i += 1
    report(sends=i, frame_bytes=len(frames[0]), **t.dump())

    def step():
        for f in frames:
            raw.calls([f])

    sustain(step)


def case_events():
    """EMITs of ~100 KB to a custom name that four idle agents subscribe to."""
    topic = os.environ["TOPIC"]
    total = int(os.environ.get("EMITS", "20000"))
    frame = enc(SyscallOp.SYS_EMIT, {"event": topic, "data": {"blob": "y" * 100_000}})
    raw = Raw()
    t = Tally()
    n = 0
    delivered = Counter()
    while n < total and not deadline():
        batch = min(16, total - n)
        for r in raw.calls([frame] * batch):
            t.add(r)
            if r.get("success"):
                delivered[r.get("delivered_to")] += 1
        n += batch
    delivered_to = {str(k): v for k, v in delivered.items()}
    report(emits=n, delivered_to=delivered_to, event_bytes=len(frame), **t.dump())
    sustain(lambda: raw.calls([frame] * 16))


def fd_child(w, stop_after):
    """One forked process: opens connections to CLOVE_SOCKET (HELLO on each) until the time is up."""
    t = Tally()
    held = []
    other = Counter()
    hello = enc(SyscallOp.SYS_HELLO, {})
    reported = False
    while True:
        if not reported and time.monotonic() >= stop_after:
            os.write(w, (json.dumps({**t.dump(), "held": len(held), "other": dict(other)}) + "\n").encode())
            os.close(w)
            reported = True
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect(SOCK)
            s.sendall(hello)
            dec = FrameDecoder(max_payload=1 << 30)
            frames = []
            while not frames:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionResetError("closed without a reply")
                frames = dec.feed(chunk)
            r = t.add(json.loads(frames[0].payload))
            if r.get("success"):
                held.append(s)  # keep it open: that is the abuse
            else:
                s.close()
        except OSError as e:
            other[_errname(e)] += 1
            s.close()
            if e.errno in (24,):  # EMFILE: this process is full; keep the kernel busy anyway
                time.sleep(0.01)



def case_fds():
    """Forked processes, each opening as many connections to CLOVE_SOCKET as it can."""
    procs = int(os.environ.get("FORKS", "8"))
    stop_after = time.monotonic() + SECONDS
    pipes = []
    for _ in range(procs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                fd_child(w, stop_after)
            finally:
                os._exit(0)
        os.close(w)
        pipes.append(r)
    t = Tally()
    held = 0
    other = Counter()
    for r in pipes:
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        if data:
            d = json.loads(data)
            t.merge(d)
            SEEN.update(d.get("codes", {}))  # the forks' answers are this agent's too
            held += d.get("held", 0)
            other.update(d.get("other", {}))
    report(forks=procs, held=held, other=dict(other), **t.dump())
    # The children keep hammering (and holding) until the agent is killed.
    sustain(lambda: time.sleep(0.2))


def case_poison():
    """A SEND of a 400 KB [[[[…]]]] (depth 200,000) between two good messages, on one connection."""
    sink = os.environ["SINK"]
    depth = int(os.environ.get("DEPTH", "200000"))
    deep = "[" * depth + "]" * depth
    poison_send = ('{"to_name":%s,"message":%s}' % (json.dumps(sink), deep)).encode()
    raw = Raw()
    t = Tally()
    before = raw.call(SyscallOp.SYS_SEND, {"to_name": sink, "message": {"t": "good", "n": 1}})
    poison = raw.call(SyscallOp.SYS_SEND, poison_send)
    after = raw.call(SyscallOp.SYS_SEND, {"to_name": sink, "message": {"t": "good", "n": 2}})
    # The same poison in other requests: a value to store, event data.
    store = raw.call(SyscallOp.SYS_STORE, ('{"key":"poison","value":%s}' % deep).encode())
    emit = raw.call(SyscallOp.SYS_EMIT, ('{"event":"abuse.poison","data":{"v":%s}}' % deep).encode())
    for r in (before, poison, after, store, emit):
        t.add(r)
    go = raw.call(SyscallOp.SYS_EMIT, {"event": os.environ["GO_EVENT"], "data": {}})
    report(
        payload_bytes=len(poison_send),
        before=before,
        poison=poison,
        after=after,
        store=store,
        emit=emit,
        go=go,
        **t.dump(),
    )
    frame = encode_frame(SyscallOp.SYS_SEND, poison_send)
    # POISON_CONNECTIONS > 1: the sustained poison comes from that many connections at once (each parse
    # of a deep payload takes the kernel's event loop for tens of milliseconds).
    extra = int(os.environ.get("POISON_CONNECTIONS", "1")) - 1
    if extra > 0:
        import threading

        def hammer():
            conn = Raw()
            while True:
                conn.calls([frame] * 4)

        for _ in range(extra):
            threading.Thread(target=hammer, daemon=True).start()
    sustain(lambda: raw.calls([frame] * 4))


def case_names():
    """REGISTER flood; reserved and reused names."""
    total = int(os.environ.get("REGISTERS", "300000"))
    raw = Raw()
    first = {}
    # Before the flood (the names budget would answer first afterwards): a name to squat, names reserved
    # for operator-spawned agents (a live one's, an escalated one's).
    for n in os.environ["SQUAT"].split(","):
        first["register:" + n] = raw.call(SyscallOp.SYS_REGISTER, {"name": n})
    for n in os.environ["RESERVED"].split(","):
        first["register:" + n] = raw.call(SyscallOp.SYS_REGISTER, {"name": n})
    # Children under the names of agents that have exited (they must start afresh), and of a reserved
    # one (refused).
    spawns = {}
    for spec in os.environ["REUSE"].split(","):
        name, key, glob = spec.split(":")
        env = {"HELPER_ROLE": "child", "REPORT_TO": str(REPORT_TO), "CHECK_KEY": key, "CHECK_GLOBAL": glob}
        spawns[name] = seen(client.spawn(name, os.environ["HELPER_SCRIPT"], env=env))
    t = Tally()
    for r in first.values():
        t.add(r)
    flood = Tally()
    n = 0
    while n < total and not deadline():
        count = min(200, total - n)
        batch = [enc(SyscallOp.SYS_REGISTER, {"name": f"{NAME}-n{n + i}"}) for i in range(count)]
        for r in raw.calls(batch):
            flood.add(r)
        n += len(batch)
    report(first=first, spawns=spawns, registers=n, flood=flood.dump(), **t.dump())
    k = [n]

    def step():
        batch = [enc(SyscallOp.SYS_REGISTER, {"name": f"{NAME}-n{k[0] + i}"}) for i in range(200)]
        raw.calls(batch)
        k[0] += 200

    sustain(step)


def case_lists():
    """STORE flood, KEYS paging, SUBSCRIBE flood, forged kernel events."""
    mark = os.environ["MARK"]
    total = int(os.environ.get("STORES", "100000"))
    raw = Raw()
    stores = Tally()
    n = 0
    value = "v" * 100
    # Time-bounded; given up to three times the time while no STORE has been refused yet (a slow machine
    # needs longer to reach the 10,000 keys of the budget).
    def more():
        elapsed = time.monotonic() - T0
        return elapsed < SECONDS or (not stores.codes and elapsed < 3 * SECONDS)

    while n < total and more():
        batch = [
            enc(SyscallOp.SYS_STORE, {"key": f"abuse6-{n + i:07d}", "value": value, "scope": "global"})
            for i in range(min(100, total - n))
        ]
        for r in raw.calls(batch):
            stores.add(r)
        n += len(batch)
    keys_page = raw.call(SyscallOp.SYS_KEYS, {"prefix": "abuse6-", "limit": 100})
    keys_next = raw.call(
        SyscallOp.SYS_KEYS, {"prefix": "abuse6-", "limit": 100, "after": (keys_page.get("keys") or [""])[-1]}
    )
    keys_default = raw.call(SyscallOp.SYS_KEYS, {"prefix": "abuse6-"})
    keys_summary = {
        "page": {k: keys_page.get(k) for k in ("success", "count", "more", "code")},
        "page_first": (keys_page.get("keys") or [None])[0],
        "page_last": (keys_page.get("keys") or [None])[-1],
        "next": {k: keys_next.get(k) for k in ("success", "count", "more", "code")},
        "next_first": (keys_next.get("keys") or [None])[0],
        "default": {k: keys_default.get(k) for k in ("success", "count", "more", "code")},
        "default_len": len(keys_default.get("keys") or []),
    }
    subs = Tally()
    b = 0
    sub_deadline = time.monotonic() + SECONDS
    while b < 1000 and time.monotonic() < sub_deadline:
        batch = [
            enc(SyscallOp.SYS_SUBSCRIBE, {"event_types": [f"t{b + j}-{i}" for i in range(1000)]})
            for j in range(min(10, 1000 - b))
        ]
        for r in raw.calls(batch):
            subs.add(r)
        b += len(batch)
    forged = {
        "event": raw.call(
            SyscallOp.SYS_EMIT, {"event": "AGENT_EXITED", "data": {"forged": mark, "agent_id": 1}}
        ),
        "event_type": raw.call(SyscallOp.SYS_EMIT, {"event_type": "AGENT_EXITED", "data": {"forged": mark}}),
        "spawned": raw.call(SyscallOp.SYS_EMIT, {"event": "AGENT_SPAWNED", "data": {"forged": mark}}),
        "custom_type": raw.call(
            SyscallOp.SYS_EMIT, {"event": "CUSTOM", "data": {"custom_type": "AGENT_EXITED", "forged": mark}}
        ),
    }
    report(
        stores_sent=n,
        stores=stores.dump(),
        keys=keys_summary,
        subscribe_batches=b,
        subscribe=subs.dump(),
        forged=forged,
    )
    k = [0]

    def step():
        batch = [enc(SyscallOp.SYS_STORE, {"key": f"abuse6-x{k[0] + i}", "value": value}) for i in range(100)]
        raw.calls(batch)
        raw.calls([enc(SyscallOp.SYS_SUBSCRIBE, {"event_types": [f"s{k[0]}-{i}" for i in range(1000)]})])
        k[0] += 100

    sustain(step)


def case_reach():
    """Connects to host Unix sockets (no network granted); LIST."""
    results = {}

    def attempt():
        for p in os.environ["TARGET_SOCKETS"].split(","):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            try:
                s.connect(p)
                try:
                    s.sendall(b"hello from a sandboxed agent\n")
                except OSError:
                    pass
                results[p] = "connected"
            except OSError as e:
                results[p] = _errname(e)
            finally:
                s.close()

    attempt()
    visible = {p: os.path.exists(p) for p in os.environ["TARGET_SOCKETS"].split(",")}
    listing = client.list_agents()
    report(connect=results, visible=visible, list=listing)
    sustain(lambda: (attempt(), time.sleep(0.1)))


def case_halfclosed():
    """RECV wait + SHUT_WR must still be answered; a 64 MiB header followed by writes must be cut off."""
    # 1. Half-closed: HELLO, then RECV {"wait": true, "timeout_ms": 1000}, then shutdown(SHUT_WR).
    half = {}
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    t0 = time.monotonic()
    try:
        s.connect(SOCK)
        s.sendall(enc(SyscallOp.SYS_HELLO, {}) + enc(SyscallOp.SYS_RECV, {"wait": True, "timeout_ms": 1000}))
        s.shutdown(socket.SHUT_WR)
        dec = FrameDecoder(max_payload=1 << 30)
        replies = []
        eof = False
        while len(replies) < 2:
            chunk = s.recv(65536)
            if not chunk:
                eof = True
                break
            for f in dec.feed(chunk):
                at_ms = int((time.monotonic() - t0) * 1000)
                replies.append({"opcode": f.opcode, "reply": seen(json.loads(f.payload)), "at_ms": at_ms})
        half = {"replies": replies, "eof_before_replies": eof}
        if not eof:
            s.settimeout(3)
            try:
                half["then"] = "eof" if s.recv(1) == b"" else "more data"
            except OSError as e:
                half["then"] = _errname(e)
    except OSError as e:
        half = {"error": _errname(e), "replies": []}
    finally:
        s.close()

    # 2. A header announcing 64 MiB, then writing: the kernel must hang up at once.
    def oversize():
        out = {}
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(SOCK)
        header = encode_frame(SyscallOp.SYS_SEND, b"")[:9] + (64 * 1024 * 1024).to_bytes(8, "little")
        chunk = b"[" * 65536
        written = 0
        t0 = time.monotonic()
        try:
            s.sendall(header)
            while written < 64 * 1024 * 1024:
                s.sendall(chunk)
                written += len(chunk)
            out["result"] = "wrote everything"
        except OSError as e:
            out["result"] = "write failed"
            out["errno"] = _errname(e)
        out["after_ms"] = int((time.monotonic() - t0) * 1000)
        out["written"] = written
        # What the kernel said before hanging up (if it is still readable).
        try:
            s.settimeout(0.5)
            dec = FrameDecoder(max_payload=1 << 30)
            data = s.recv(65536)
            fs = dec.feed(data) if data else []
            out["reply"] = seen(json.loads(fs[0].payload)) if fs else None
        except (OSError, ValueError) as e:
            out["reply_error"] = _errname(e) if isinstance(e, OSError) else repr(e)
        s.close()
        return out

    big = oversize()
    report(halfclosed=half, oversize=big, codes={})

    def step():
        oversize()
        time.sleep(0.05)

    sustain(step)


CASES = {
    "mailboxes": case_mailboxes,
    "events": case_events,
    "fds": case_fds,
    "poison": case_poison,
    "names": case_names,
    "lists": case_lists,
    "reach": case_reach,
    "halfclosed": case_halfclosed,
}

CASES[CASE]()
