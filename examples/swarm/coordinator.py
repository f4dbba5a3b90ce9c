"""The coordinator of the demo swarm (examples/swarm/clove.yaml).

Every round it creates a task — count the primes below --limit — split into --chunks subtasks, and lets
the kernel hand each to the least busy worker (`pool: workers-*`). The kernel tells it when the task is
done; a worker that dies holding a subtask costs nothing but time: the kernel reassigns it.
"""
import argparse
import os
import time

from clove_sdk import CloveClient

ap = argparse.ArgumentParser()
ap.add_argument("--limit", type=int, default=200_000)
ap.add_argument("--chunks", type=int, default=8)
ap.add_argument("--rounds", type=int, default=0, help="stop after this many rounds (0: run forever)")
opts = ap.parse_args()
pause = float(os.environ.get("ROUND_PAUSE", "2"))

with CloveClient() as c:
    c.hello()
    rnd = 0
    while opts.rounds == 0 or rnd < opts.rounds:
        rnd += 1
        t0 = time.monotonic()
        step = opts.limit // opts.chunks
        ranges = [(i * step, opts.limit if i == opts.chunks - 1 else (i + 1) * step) for i in range(opts.chunks)]
        # Every subtask is given at creation (a task is complete when all of its subtasks are), then each
        # is handed to the least busy live worker of the pool.
        task = c.task_create(
            f"round {rnd}: count the primes below {opts.limit}",
            [{"description": f"primes in [{lo}, {hi})", "payload": {"range": [lo, hi]}} for lo, hi in ranges],
            pool="workers-*",
            policy={"on_failure": "reassign", "max_attempts": 5},
            deadline_ms=120_000,
        )
        tid = task["id"]
        for _ in ranges:
            c.task_assign(tid)
        while True:  # the kernel's word on the task: task_completed or task_failed
            body = (c.wait_message(timeout=None).get("message")) or {}
            if isinstance(body, dict) and body.get("task_id") == tid and body.get("type") in ("task_completed", "task_failed"):
                break
        ms = (time.monotonic() - t0) * 1000
        if body["type"] == "task_completed":
            results = body["results"].values()
            total = sum(r["primes"] for r in results)
            workers = sorted({r["by"] for r in results})
            print(f"round {rnd}: {total} primes below {opts.limit}, {len(workers)} workers helped, {ms:.0f} ms", flush=True)
        else:
            print(f"round {rnd}: task {tid} failed: {body.get('error')}", flush=True)
        time.sleep(pause)
