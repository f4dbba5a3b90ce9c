"""EXEC test agent (kernel/syscalls/exec/exec.test.ts): a sandboxed agent that serves requests from the
test's operator. Each message {"id", "op", ...} gets the reply {"id", ...} sent back to its sender:

- op "exec": the SDK's exec(command, cwd, timeout) when "sdk" is true, else a raw EXEC with "payload";
  replies {"reply": <the kernel's EXEC reply>}.
- op "whoami": this agent's own view, to compare the command's with: uid, gid, pid namespace, cgroup,
  pids it sees in /proc.
- op "write": writes "content" to "path" (e.g. in its private /tmp), with "mode" (octal string).
"""
import os

from clove_sdk import CloveClient
from clove_sdk.protocol import SyscallOp

c = CloveClient()
c.connect()
c.hello()


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return None


def whoami():
    return {
        "seccomp": status("Seccomp"),
        "nnp": status("NoNewPrivs"),
        "capeff": status("CapEff"),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pidns": os.readlink("/proc/self/ns/pid"),
        "mntns": os.readlink("/proc/self/ns/mnt"),
        "cgroup": open("/proc/self/cgroup").read(),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }


def handle(m):
    op = m.get("op")
    if op == "exec":
        if m.get("sdk"):
            a = m["args"]
            return {"reply": c.exec(a["command"], a.get("cwd"), a.get("timeout", 30))}
        return {"reply": c.call_json(SyscallOp.SYS_EXEC, m["payload"])}
    if op == "whoami":
        return whoami()
    if op == "write":
        with open(m["path"], "w") as f:
            f.write(m["content"])
        os.chmod(m["path"], int(m.get("mode", "644"), 8))
        return {"ok": True}
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
