"""An agent for cli/mcp/mcp.test.ts: logs every message it gets and sends it back to its sender."""
import json

from clove_sdk import CloveClient

c = CloveClient()
c.connect()
c.hello()
print("echo agent ready", flush=True)
while True:
    r = c.recv_messages(10, timeout=30)
    for m in r.get("messages", []):
        print(f"got {json.dumps(m['message'])} from {m['from_name']}", flush=True)
        c.send_message({"echo": m["message"]}, to=m["from"])
