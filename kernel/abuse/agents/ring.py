"""A well-behaved agent of the abuse suite's ring (kernel/abuse/abuse.test.ts). Stdlib + the Clove SDK.

RING_SIZE agents named f"{RING_PREFIX}{i}" form a ring: every RING_INTERVAL_MS each sends a numbered
data message {"t": "d", "n": k} to the next one and takes what the previous one sent. Lossless
accounting without per-message reports:

* k only grows once the kernel ACCEPTED message k (a refused SEND is retried with the same k and
  counted in `errors`), so the sender's `sent` is exactly "messages 1..sent were accepted".
* Mailboxes are FIFO and each agent has exactly one sender, so the receiver checks that message
  numbers arrive as 1, 2, 3, … (`gaps` counts every departure); `got` received with no gap means
  exactly 1..got were delivered.
* Every RING_REPORT_MS a cumulative "tick" {sent, got, gaps, foreign, errors} goes to REPORT_TO (the
  test's collector). Reports are cumulative, so a report that cannot be queued is simply superseded by
  the next one (counted in `report_failures`).

Command (a message with "cmd"): {"cmd": "stop"}: stop sending, keep receiving and reporting.
"""
import os
import time

from clove_sdk import CloveClient

NAME = os.environ["CLOVE_AGENT_NAME"]
PREFIX = os.environ.get("RING_PREFIX", "ring-")
SIZE = int(os.environ["RING_SIZE"])
INTERVAL = int(os.environ.get("RING_INTERVAL_MS", "50")) / 1000.0
REPORT_EVERY = int(os.environ.get("RING_REPORT_MS", "200")) / 1000.0
REPORT_TO = int(os.environ["REPORT_TO"])

me = int(NAME[len(PREFIX) :])
NEXT = f"{PREFIX}{(me + 1) % SIZE}"
PREV = f"{PREFIX}{(me - 1) % SIZE}"

c = CloveClient(timeout=30)
c.connect()
c.hello()

sent = 0  # messages 1..sent were accepted by the kernel
got = 0  # messages received from PREV
expect = 1  # the number the next message from PREV must carry
gaps = 0  # departures from 1, 2, 3, … (a loss, a duplicate or a reordering)
first_gap = None
foreign = 0  # data messages from anybody but PREV
errors = {}  # error code -> count, of this agent's own SEND / RECV calls
report_failures = 0
stopped = False


def report(kind="tick"):
    global report_failures
    body = {
        "t": kind,
        "name": NAME,
        "next": NEXT,
        "prev": PREV,
        "sent": sent,
        "got": got,
        "gaps": gaps,
        "first_gap": first_gap,
        "foreign": foreign,
        "errors": errors,
        "report_failures": report_failures,
        "stopped": stopped,
    }
    r = c.send_message(body, to=REPORT_TO)
    if not r.get("success"):
        report_failures += 1


report("up")
next_send = time.monotonic()
next_report = time.monotonic() + REPORT_EVERY
while True:
    now = time.monotonic()
    if not stopped and now >= next_send:
        r = c.send_message({"t": "d", "n": sent + 1}, to_name=NEXT)
        if r.get("success"):
            sent += 1
        else:
            code = r.get("code") or "?"
            errors[code] = errors.get(code, 0) + 1
        next_send += INTERVAL
        if next_send < time.monotonic():
            next_send = time.monotonic() + INTERVAL
    if time.monotonic() >= next_report:
        report()
        next_report = time.monotonic() + REPORT_EVERY
    deadline = next_report if stopped else min(next_send, next_report)
    wait = max(0.001, deadline - time.monotonic())
    r = c.recv_messages(100, timeout=wait)
    if not r.get("success"):
        code = r.get("code") or "?"
        errors["recv:" + code] = errors.get("recv:" + code, 0) + 1
        continue
    for m in r.get("messages", []):
        body = m.get("message")
        if not isinstance(body, dict):
            continue
        if body.get("cmd") == "stop":
            if not stopped:
                stopped = True
                report("stopped")
        elif body.get("t") == "d":
            if m.get("from_name") != PREV:
                foreign += 1
                continue
            n = body.get("n")
            if n != expect:
                gaps += 1
                if first_gap is None:
                    first_gap = {"expected": expect, "got": n}
            expect = (n if isinstance(n, int) else expect) + 1
            got += 1
