"""MCP test agent (kernel/syscalls/mcp/mcp.test.ts): a sandboxed agent that serves requests from the
test's operator through the Python SDK. Each message {"id", "op", ...} gets {"id", "reply"} back:

- op "list": mcp_list_tools(server)
- op "call": mcp_call(server, tool, arguments, timeout_ms)
- op "ping": {"success": true} (the test waits for it: the agent is serving)
The kernel's reply is passed on as it is (error replies too: the client is not strict).
"""
from clove_sdk import CloveClient

c = CloveClient()
c.connect()
c.hello()


def handle(m):
    op = m.get("op")
    if op == "ping":
        return {"reply": {"success": True}}
    if op == "list":
        return {"reply": c.mcp_list_tools(m.get("server"), check=False)}
    if op == "call":
        return {
            "reply": c.mcp_call(m["server"], m["tool"], m.get("arguments"), m.get("timeout_ms"), check=False)
        }
    return {"error": f"unknown op {op}"}


while True:
    r = c.recv_messages(10, timeout=30)
    for msg in r.get("messages", []):
        m = msg["message"]
        try:
            out = handle(m)
        except Exception as e:  # report, keep serving
            out = {"error": repr(e)}
        out["id"] = m.get("id")
        c.send_message(out, to=msg["from"])
