"""A demo swarm worker: passes numbered messages to its neighbour and counts what it receives.

Run by `clove up`: N workers named worker-0 … worker-(N-1), each sending to the next one.
"""
import os
import sys
import time

from clove_sdk import CloveClient

name = os.environ["CLOVE_AGENT_NAME"]
size = int(sys.argv[1]) if len(sys.argv) > 1 else 10
index = int(name.rsplit("-", 1)[1])
peer = f"worker-{(index + 1) % size}"

with CloveClient() as c:
    sent = received = 0
    while True:
        r = c.send_message({"n": sent, "from": name}, to_name=peer)
        if r.get("success"):
            sent += 1
        got = c.recv_messages(max_messages=100, timeout=1.0)
        received += len(got.get("messages", []))
        if sent % 50 == 0:
            print(f"{name}: sent {sent}, received {received}", flush=True)
        time.sleep(0.2)
