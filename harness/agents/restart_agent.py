"""Agent of the kernel-restart chaos scenario (chaos/kernel-restart.ts). Python; stdlib + the Clove SDK.

It sends numbered messages to one peer (RESTART_PEER) through the kernel, one every RESTART_INTERVAL_MS,
and receives its own. The kernel is SIGKILLed and started again while this runs: the agent itself does
nothing about it. Its SDK rides through the restart (issue 17), so every call below either succeeds or
counts as an error the caller saw, and the scenario requires that count to be 0 — but for not_found
before its first acknowledged SEND: agents are spawned one after another, so its peer may not exist yet.

A message counts as sent once SEND replied ok (the kernel acknowledged it). On {"cmd": "stop"} it stops
sending, keeps receiving until nothing arrived for RESTART_QUIET_MS, then prints one summary line (JSON,
on stdout, i.e. its log file) and idles, receiving, until it is stopped.
"""
import json
import os
import sys
import time

from clove_sdk import CloveClient

NAME = os.environ["CLOVE_AGENT_NAME"]
PEER = os.environ["RESTART_PEER"]
INTERVAL = int(os.environ.get("RESTART_INTERVAL_MS", "20")) / 1000.0
QUIET = int(os.environ.get("RESTART_QUIET_MS", "2000")) / 1000.0

c = CloveClient(strict=False)
c.connect()

acked = 0
got: dict = {}
dups = 0
errors: list = []
stopped_at = None
last_got = time.monotonic()
summary_done = False
next_send = time.monotonic()
next_progress = time.monotonic()


def error(what, detail):
    errors.append({"op": what, "detail": detail, "t": time.time()})
    # An error the caller sees is exactly what the scenario forbids: slow down instead of spinning.
    time.sleep(0.05)


while True:
    now = time.monotonic()
    wait = 1.0 if stopped_at is not None else max(0.001, next_send - now)
    try:
        r = c.recv_messages(256, timeout=wait)
    except Exception as e:  # noqa: BLE001 - any exception reaches the caller: count it
        error("recv", f"{type(e).__name__}: {e}")
        continue
    if not r.get("success"):
        error("recv", r)
    for m in r.get("messages", []):
        body = m.get("message")
        if not isinstance(body, dict):
            continue
        if body.get("t") == "d":
            s = got.setdefault(body.get("src"), set())
            if body.get("n") in s:
                dups += 1
            s.add(body.get("n"))
            last_got = time.monotonic()
        elif body.get("cmd") == "stop" and stopped_at is None:
            stopped_at = time.monotonic()

    if stopped_at is None and time.monotonic() >= next_send:
        try:
            r = c.send_message({"t": "d", "src": NAME, "n": acked + 1}, to_name=PEER)
        except Exception as e:  # noqa: BLE001
            error("send", f"{type(e).__name__}: {e}")
            r = None
        if r is not None:
            if r.get("success"):
                acked += 1
            elif acked == 0 and r.get("code") == "not_found":
                pass  # the peer is spawned after us and has not started yet: the scenario starts then
            else:
                error("send", r)
        next_send += INTERVAL
        if next_send < time.monotonic():
            next_send = time.monotonic() + INTERVAL

    if time.monotonic() >= next_progress:
        # Progress once a second (wall clock): the scenario tells from it what was sent after the restart.
        print(json.dumps({"t": "p", "acked": acked, "ts": int(time.time() * 1000)}), flush=True)
        next_progress = time.monotonic() + 1.0

    if stopped_at is not None and not summary_done and time.monotonic() - max(stopped_at, last_got) >= QUIET:
        summary_done = True
        print(
            json.dumps(
                {
                    "t": "summary",
                    "name": NAME,
                    "peer": PEER,
                    "acked": acked,
                    "got": {src: sorted(ns) for src, ns in got.items()},
                    "dups": dups,
                    "errors": len(errors),
                    "first_errors": errors[:5],
                }
            ),
            flush=True,
        )
        sys.stdout.flush()
