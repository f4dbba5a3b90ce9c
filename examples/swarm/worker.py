"""A worker of the demo swarm (examples/swarm/clove.yaml).

It waits for the subtasks the kernel hands it (a `task_assigned` message per subtask), counts the primes
in the range it was given and completes the subtask with the count. If it dies halfway, the kernel gives
the subtask to another worker: the coordinator never notices.
"""
import math
import os
import time

from clove_sdk import CloveClient

name = os.environ["CLOVE_AGENT_NAME"]


def count_primes(lo: int, hi: int) -> int:
    """Primes p with lo <= p < hi (a segmented sieve)."""
    lo = max(lo, 2)
    if hi <= lo:
        return 0
    root = math.isqrt(hi - 1)
    small = bytearray([1]) * (root + 1)
    small[:2] = b"\0\0"
    for i in range(2, math.isqrt(root) + 1):
        if small[i]:
            small[i * i :: i] = bytearray(len(small[i * i :: i]))
    seg = bytearray([1]) * (hi - lo)
    for p in range(2, root + 1):
        if small[p]:
            start = max(p * p, (lo + p - 1) // p * p)
            seg[start - lo :: p] = bytearray(len(seg[start - lo :: p]))
    return sum(seg)


with CloveClient() as c:
    c.hello()  # says "ready": workers count as healthy for the coordinator's depends_on from here
    print(f"{name}: ready", flush=True)
    while True:
        m = c.wait_message(timeout=None)  # parked in the kernel: the watchdog counts it as alive
        body = m.get("message") or {}
        if not isinstance(body, dict) or body.get("type") != "task_assigned":
            continue
        lo, hi = body["payload"]["range"]
        t0 = time.monotonic()
        n = count_primes(lo, hi)
        c.task_complete(body["task_id"], result={"primes": n, "by": name}, subtask_id=body["subtask_id"])
        ms = (time.monotonic() - t0) * 1000
        print(f"{name}: task {body['task_id']}.{body['subtask_id']} [{lo}, {hi}) -> {n} primes ({ms:.0f} ms)", flush=True)
