#!/usr/bin/env python3
"""Fault-injection benchmark of popular multi-agent frameworks (stdlib only).

For every framework x fault it launches the framework's workload (bench/rivals/python/*,
bench/rivals/node/*) inside fresh cgroup-v1 groups (memory 512 MiB incl. swap, pids.max 64,
cpu quota 1.5 cores, cpuacct for accounting), reads the workload's JSON-lines progress
stream, kills every process of the case at the end and writes reports/rivals.json and
reports/rivals.md.

    bash bench/rivals/setup.sh && python3 bench/rivals/run.py
    python3 bench/rivals/run.py --quick
    python3 bench/rivals/run.py --frameworks crewai,langgraph --faults none,hang

Each framework also has a "<framework> under Clove" row (`<name>-clove`): the same ring, but every
member is its own Clove agent (bench/rivals/python/clove_member.py, node/clove_member.mjs) under a
Clove kernel this script starts (`node bin/clove.js kernel` on a temporary socket and data dir, inside
the case's cgroups), handing the item on with SEND/RECV; see run_clove_case.

Run it with the machine's interpreter (not the venv): it only needs the stdlib, the repo's stdlib-only
Python SDK (sdk/python) and root (for the cgroups).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV_PY = HERE / ".venv" / "bin" / "python"
CLOVE_JS = REPO / "bin" / "clove.js"
sys.path.insert(0, str(REPO / "sdk" / "python"))
from clove_sdk import CloveClient  # noqa: E402  (stdlib only)
from clove_sdk.protocol import SyscallOp  # noqa: E402

# Under Clove: a member silent (no syscall, not parked in RECV) this long is killed and restarted.
CLOVE_WATCHDOG_MS = 3000
CLOVE_EVENTS = ["AGENT_EXITED", "AGENT_RESTARTING", "AGENT_ESCALATED"]
NODE_DIR = HERE / "node"
CG_ROOT = Path("/sys/fs/cgroup")
CG_NAME = "clove-rivals"
CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")

FAULTS = ["none", "sigkill", "segfault", "exception", "leak", "hang", "forkbomb", "cpu"]
QUICK_FAULTS = ["none", "sigkill", "exception", "hang"]

FRAMEWORKS = {
    "crewai": {
        "label": "CrewAI",
        "lang": "python",
        "script": HERE / "python" / "crewai_workload.py",
        "packages": ["crewai"],
        "topology": "sequential Crew of 5 Agents/5 Tasks (a0..a4, each task gets the previous one's output "
                    "as context), kicked off again after every lap until the time budget is used",
        "fake_model": "ScriptedLLM, a custom crewai BaseLLM subclass answering in CrewAI's ReAct format "
                      "(CrewAI ships no fake LLM); tools are crewai BaseTool subclasses",
    },
    "langgraph": {
        "label": "LangGraph (Python)",
        "lang": "python",
        "script": HERE / "python" / "langgraph_workload.py",
        "packages": ["langgraph", "langchain-core"],
        "topology": "StateGraph cycle a0->a1->a2->a3->a4->a0 (conditional END after the time budget), one "
                    "graph.invoke, default compile (no checkpointer, no RetryPolicy)",
        "fake_model": "langchain_core FakeListChatModel per agent; tools are langchain_core @tool",
    },
    "autogen": {
        "label": "AutoGen AgentChat",
        "lang": "python",
        "script": HERE / "python" / "autogen_workload.py",
        "packages": ["autogen-agentchat", "autogen-core", "autogen-ext"],
        "topology": "RoundRobinGroupChat of 5 AssistantAgents, TimeoutTermination(duration), one team.run_stream",
        "fake_model": "autogen_ext ReplayChatCompletionClient replaying a function call to the agent's "
                      "FunctionTool (sync function, run by AutoGen in a worker thread)",
    },
    "langgraph-js": {
        "label": "LangGraph.js",
        "lang": "node",
        "script": NODE_DIR / "langgraph_workload.mjs",
        "packages": ["@langchain/langgraph", "@langchain/core"],
        "topology": "StateGraph cycle a0->a1->a2->a3->a4->a0 (conditional END after the time budget), one "
                    "graph.invoke, default compile (no checkpointer, no retryPolicy)",
        "fake_model": "@langchain/core FakeListChatModel per agent; tools are @langchain/core tool() (async)",
    },
}

# "<framework> under Clove": the same ring, each member its own Clove agent running the framework's
# construct for its own turn (built from the bare workload's code), the item handed on by SEND/RECV.
CLOVE_CONSTRUCT = {
    "crewai": "a Crew of its one Agent/Task (crewai_workload's ScriptedLLM and Work tool), crew.kickoff() per turn",
    "langgraph": "a one-node StateGraph (langgraph_workload.make_agent), graph.invoke per turn",
    "autogen": "its AssistantAgent (autogen_workload.make_agent), agent.run(task=...) per turn",
    "langgraph-js": "a one-node StateGraph built like langgraph_workload.mjs's nodes, graph.invoke per turn",
}


def _with_clove_rows(bare: dict) -> dict:
    out = {}
    for name, fw in bare.items():
        out[name] = fw
        out[f"{name}-clove"] = {
            **fw,
            "label": f"{fw['label']} under Clove",
            "clove": name,
            "script": (NODE_DIR / "clove_member.mjs") if fw["lang"] == "node" else (HERE / "python" / "clove_member.py"),
            "topology": f"ring a0->a1->a2->a3->a4->a0 of 5 Clove agents (one process each, restart_policy always, "
                        f"watchdog {CLOVE_WATCHDOG_MS} ms, cgroup limits of their own), each running "
                        f"{CLOVE_CONSTRUCT[name]}; the item handed on with SEND and taken with RECV under a lease",
        }
    return out


FRAMEWORKS = _with_clove_rows(FRAMEWORKS)

FAULT_TEXT = {
    "none": "no fault (baseline)",
    "sigkill": "agent a2 sends SIGKILL to its own process",
    "segfault": "agent a2 segfaults (Python: ctypes.string_at(0); Node: process.kill(pid, 'SIGSEGV'))",
    "exception": "agent a2's tool raises/throws once (unhandled in agent code)",
    "leak": "agent a2 keeps 32 MiB more on every step (memory cgroup limit 512 MiB)",
    "hang": "agent a2 blocks forever (Python: threading.Event().wait(); Node: never-settling promise)",
    "forkbomb": "agent a2 fork-bombs (os.fork / child_process.spawn loop; pids cgroup pids.max=64)",
    "cpu": "agent a2 enters an endless busy loop",
}

NOISE = re.compile(r"approximate input token count|Token count has been done only on string content")


# ----------------------------------------------------------------------------- cgroups
class CaseCgroups:
    def __init__(self, run_id: str, mem_limit: int, pids_max: int, cpu_quota_us: int) -> None:
        self.dirs = {c: CG_ROOT / c / CG_NAME / run_id for c in CONTROLLERS}
        for c, d in self.dirs.items():
            d.mkdir(parents=True, exist_ok=True)
        m = self.dirs["memory"]
        _w(m / "memory.limit_in_bytes", mem_limit)
        if (m / "memory.memsw.limit_in_bytes").exists():
            _w(m / "memory.memsw.limit_in_bytes", mem_limit)
        _w(self.dirs["pids"] / "pids.max", pids_max)
        _w(self.dirs["cpu"] / "cpu.cfs_period_us", 100000)
        _w(self.dirs["cpu"] / "cpu.cfs_quota_us", cpu_quota_us)
        # verify before anything is launched in them (a fork bomb must never run unbounded)
        if _r(self.dirs["pids"] / "pids.max") != str(pids_max):
            raise RuntimeError("pids.max did not take")
        if int(_r(m / "memory.limit_in_bytes")) > mem_limit:
            raise RuntimeError("memory.limit_in_bytes did not take")

    def members(self) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs.values():
            try:
                pids.update(int(x) for x in _r(d / "cgroup.procs").split())
            except OSError:
                pass
        return pids

    def stat(self) -> dict:
        m, p = self.dirs["memory"], self.dirs["pids"]
        out: dict = {}
        try:
            out["peak_memory_mib"] = round(int(_r(m / "memory.max_usage_in_bytes")) / 2**20, 1)
            out["memory_limit_hits"] = int(_r(m / "memory.failcnt"))
            oc = dict(line.split() for line in _r(m / "memory.oom_control").splitlines())
            out["oom_kills"] = int(oc.get("oom_kill", 0))
        except (OSError, ValueError):
            pass
        try:
            out["peak_pids"] = int(_r(p / "pids.peak")) if (p / "pids.peak").exists() else None
            out["fork_rejections"] = int(_r(p / "pids.events").split()[-1])
        except (OSError, ValueError, IndexError):
            pass
        try:
            out["cpu_s"] = round(int(_r(self.dirs["cpuacct"] / "cpuacct.usage")) / 1e9, 2)
        except (OSError, ValueError):
            pass
        return out

    def kill_all(self, timeout: float = 10.0) -> int:
        """SIGKILL every member until the groups are empty. Returns how many pids were killed."""
        killed: set[int] = set()
        deadline = time.time() + timeout
        while time.time() < deadline:
            pids = self.members()
            if not pids:
                return len(killed)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"cgroup members survived SIGKILL: {sorted(self.members())}")

    def remove(self) -> None:
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def _w(path: Path, value) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _r(path: Path) -> str:
    with open(path) as f:
        return f.read().strip()


def cleanup_stale() -> None:
    """Kill and remove leftovers of an earlier, aborted run."""
    for c in CONTROLLERS:
        base = CG_ROOT / c / CG_NAME
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if d.is_dir():
                for _ in range(100):
                    pids = [int(x) for x in _r(d / "cgroup.procs").split()]
                    if not pids:
                        break
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    time.sleep(0.05)
                try:
                    d.rmdir()
                except OSError:
                    pass


def remove_base() -> None:
    for c in CONTROLLERS:
        try:
            (CG_ROOT / c / CG_NAME).rmdir()
        except OSError:
            pass


# ----------------------------------------------------------------------------- probing
def sh(cmd: list[str], timeout: float = 60) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)


def probe_framework(name: str) -> dict:
    fw = FRAMEWORKS[name]
    info = {"label": fw["label"], "lang": fw["lang"], "topology": fw["topology"], "fake_model": fw["fake_model"],
            "workload": str(fw["script"].relative_to(REPO)), "available": False, "error": None, "packages": {}}
    if fw["lang"] == "python":
        if not VENV_PY.exists():
            info["error"] = f"{VENV_PY} missing: run bash bench/rivals/setup.sh"
            return info
        mods = {"crewai": "crewai", "langgraph": "langgraph.graph", "autogen": "autogen_agentchat.teams"}
        code = ("import json,importlib.metadata as m;import %s;print(json.dumps({p:m.version(p) for p in %r}))"
                % (mods[fw.get("clove", name)], fw["packages"]))
        rc, out = sh([str(VENV_PY), "-c", code], timeout=120)
        if rc != 0:
            info["error"] = out[-2000:]
            return info
        info["packages"] = json.loads(out.strip().splitlines()[-1])
        rc, out = sh([str(VENV_PY), "-c", "import platform;print(platform.python_version())"])
        info["runtime"] = f"Python {out}"
    else:
        for pkg in fw["packages"]:
            pj = NODE_DIR / "node_modules" / pkg / "package.json"
            try:
                info["packages"][pkg] = json.loads(pj.read_text())["version"]
            except (OSError, ValueError) as e:
                info["error"] = f"{pj}: {e} (run bash bench/rivals/setup.sh)"
                return info
        rc, out = sh(["node", "--version"])
        if rc != 0:
            info["error"] = out
            return info
        info["runtime"] = f"Node {out}"
    info["version"] = info["packages"][fw["packages"][0]]
    if fw.get("clove"):
        if not (REPO / "dist" / "kernel").is_dir():
            info["error"] = f"{REPO / 'dist'} missing: run npm run build (the Clove kernel)"
            return info
        info["clove"] = {"kernel": "node bin/clove.js kernel (this checkout)", "watchdog_ms": CLOVE_WATCHDOG_MS,
                         "restart_policy": "always"}
    info["available"] = True
    return info


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    _, node = sh(["node", "--version"])
    _, vpy = sh([str(VENV_PY), "-c", "import platform;print(platform.python_version())"]) if VENV_PY.exists() else (0, None)
    return {"cores": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "kernel": platform.release(), "cpu_model": cpu, "memory_gib": mem,
            "python_driver": platform.python_version(), "python_workloads": vpy, "node": node,
            "os": platform.platform(), "date": _dt.datetime.now(_dt.timezone.utc).date().isoformat()}


# ----------------------------------------------------------------------------- one case
def run_case(name: str, fault: str, cfg: argparse.Namespace, seq: int) -> dict:
    fw = FRAMEWORKS[name]
    if fw.get("clove"):
        return run_clove_case(name, fault, cfg, seq)
    run_id = f"{os.getpid()}-{seq}-{name}-{fault}"
    env = dict(os.environ)
    env.update({"RIVALS_FAULT": fault, "RIVALS_AGENTS": str(cfg.agents), "RIVALS_FAULT_AGENT": str(cfg.fault_agent),
                "RIVALS_FAULT_AT": str(cfg.fault_at), "RIVALS_DURATION": str(cfg.duration),
                "RIVALS_WORK_MS": str(cfg.work_ms), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    for k in ("VIRTUAL_ENV", "PYTHONPATH", "NODE_OPTIONS"):
        env.pop(k, None)
    prog = [str(VENV_PY), str(fw["script"])] if fw["lang"] == "python" else ["node", str(fw["script"])]
    cg = CaseCgroups(run_id, cfg.mem_mib << 20, cfg.pids_max, int(cfg.cpu_cores * 100000))
    stderr_path = Path(cfg.logdir) / f"{name}-{fault}.stderr"
    stdout_path = Path(cfg.logdir) / f"{name}-{fault}.stdout"
    events: list[dict] = []
    bad_lines = 0
    lock = threading.Lock()
    t_launch = time.time()
    proc = None
    try:
        with open(stderr_path, "w") as errf:
            proc = subprocess.Popen([sys.executable, str(HERE / "launcher.py"), *map(str, cg.dirs.values()), "--", *prog],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf, env=env,
                                    cwd=str(fw["script"].parent), start_new_session=True)

        def reader() -> None:
            nonlocal bad_lines
            with open(stdout_path, "wb") as raw:
                for line in proc.stdout:
                    raw.write(line)
                    try:
                        ev = json.loads(line)
                        ev["_recv"] = time.time()
                        with lock:
                            events.append(ev)
                    except ValueError:
                        bad_lines += 1

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        deadline = t_launch + cfg.startup_timeout
        started = False
        alive_at_timeout = False
        t_exit = None
        while True:
            rc = proc.poll()
            now = time.time()
            if rc is not None:
                t_exit = now
                break
            if not started:
                with lock:
                    st = next((e for e in events if e.get("ev") == "start"), None)
                if st:
                    started = True
                    deadline = st["t"] + cfg.duration + cfg.grace
            if now >= deadline:
                alive_at_timeout = True
                break
            time.sleep(0.02)
        stats = cg.stat()
        extra_members = sorted(cg.members() - ({proc.pid} if proc else set()))
        killed = cg.kill_all()
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait(timeout=10)
        t_done = time.time()
        th.join(timeout=5)
    finally:
        try:
            cg.kill_all()
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            cg.remove()
    stderr_txt = stderr_path.read_text(errors="replace")
    return analyse(name, fault, cfg, events, dict(
        returncode=rc, alive_at_timeout=alive_at_timeout, t_launch=t_launch, t_exit=t_exit, t_done=t_done,
        stats=stats, killed_at_end=killed, stray_processes_at_end=len(extra_members), stderr=stderr_txt,
        bad_lines=bad_lines, stdout_log=str(stdout_path), stderr_log=str(stderr_path)))


# ----------------------------------------------------------------------------- one case under Clove
class MemberLogs:
    """Follows the members' log files (<data-dir>/logs/<agent>.log, where a Clove agent's stdout and
    stderr go) and returns their JSON lines as they are written; other lines are kept per agent."""

    def __init__(self, logdir: Path, agents: list[str]) -> None:
        self.paths = {a: logdir / f"{a}.log" for a in agents}
        self.pos = {a: 0 for a in agents}
        self.partial = {a: b"" for a in agents}
        self.other: dict[str, list[str]] = {a: [] for a in agents}
        self.bad = 0

    def poll(self) -> list[dict]:
        out = []
        for a, path in self.paths.items():
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < self.pos[a]:  # rotated (copy-and-truncate): read it again from the start
                        self.pos[a], self.partial[a] = 0, b""
                    f.seek(self.pos[a])
                    data = f.read()
            except FileNotFoundError:
                continue
            self.pos[a] += len(data)
            *lines, self.partial[a] = (self.partial[a] + data).split(b"\n")
            now = time.time()
            for raw in lines:
                text = raw.decode(errors="replace")
                if not text.startswith("{"):
                    self.other[a].append(text)
                    continue
                try:
                    ev = json.loads(text)
                except ValueError:
                    self.bad += 1
                    self.other[a].append(text)
                    continue
                ev["_recv"] = now
                ev.setdefault("agent", a)
                out.append(ev)
        return out


def _kernel_client(sock: Path, proc: subprocess.Popen, deadline: float, log: Path) -> CloveClient:
    """An operator client of the case's kernel once it listens; an error with its log if it never does."""
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Clove kernel exited with {proc.returncode} at start: {log.read_text()[-2000:]}")
        if sock.exists():
            c = CloveClient(str(sock), timeout=30)
            if c.connect():
                return c
        time.sleep(0.05)
    raise RuntimeError(f"the Clove kernel did not listen on {sock}: {log.read_text()[-2000:]}")


def run_clove_case(name: str, fault: str, cfg: argparse.Namespace, seq: int) -> dict:
    """The ring under Clove: a kernel (in the case's cgroups) runs each member as an agent of its own.

    The case's cgroups hold the kernel and every agent: memory and pids are (agents + 1) times the bare
    case's (each member is a process with its own interpreter and framework), the CPU quota is the bare
    case's total. Each member gets the bare program's limits as its own (memory, pids, CPU) through SPAWN.
    The ring starts once every member printed "ready" (imports excluded from the budget, as for the bare
    runs); run.py then hands item 0 to a0 and reads the members' logs and the kernel's exit events."""
    fw = FRAMEWORKS[name]
    run_id = f"{os.getpid()}-{seq}-{name}-{fault}"
    agents = [f"a{i}" for i in range(cfg.agents)]
    fa = f"a{cfg.fault_agent}"
    root = Path(tempfile.mkdtemp(prefix="clv-rivals-", dir="/tmp"))
    sock, data = root / "clove.sock", root / "data"
    case_dir = Path(cfg.logdir) / f"{name}-{fault}"
    shutil.rmtree(case_dir, ignore_errors=True)
    case_dir.mkdir(parents=True)
    kernel_log = case_dir / "kernel.log"
    env = dict(os.environ)
    for k in ("VIRTUAL_ENV", "PYTHONPATH", "NODE_OPTIONS", "CLOVE_SOCKET"):
        env.pop(k, None)
    agent_env = {"RIVALS_FAULT": fault, "RIVALS_AGENTS": str(cfg.agents), "RIVALS_FAULT_AGENT": str(cfg.fault_agent),
                 "RIVALS_FAULT_AT": str(cfg.fault_at), "RIVALS_DURATION": str(cfg.duration),
                 "RIVALS_WORK_MS": str(cfg.work_ms), "PYTHONDONTWRITEBYTECODE": "1"}
    limits = {"memory": cfg.mem_mib << 20, "max_pids": cfg.pids_max,
              "cpu_quota": int(cfg.cpu_cores * 100000), "cpu_period": 100000}
    cg = CaseCgroups(run_id, (cfg.agents + 1) * (cfg.mem_mib << 20), (cfg.agents + 1) * cfg.pids_max,
                     int(cfg.cpu_cores * 100000))
    logs = MemberLogs(data / "logs", agents)
    events: list[dict] = []
    kernel_events: list[dict] = []
    rows: list[dict] = []
    t_launch = time.time()
    proc = client = None
    rc = None
    alive_at_timeout = False
    t_exit = None
    killed = 0
    try:
        with open(kernel_log, "wb") as klog:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "launcher.py"), *map(str, cg.dirs.values()), "--", "node", str(CLOVE_JS),
                 "kernel", "--socket", str(sock), "--data-dir", str(data), "--log-level", "warn", "--log-format", "json"],
                stdin=subprocess.DEVNULL, stdout=klog, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                start_new_session=True)
        deadline = t_launch + cfg.startup_timeout
        client = _kernel_client(sock, proc, deadline, kernel_log)
        client.subscribe(CLOVE_EVENTS)

        def drain_kernel_events() -> None:
            r = client.poll_events(100)
            for e in r.get("events", []) if isinstance(r, dict) else []:
                d = e.get("data") or {}
                kernel_events.append({"type": e.get("type"), "t": time.time(),
                                      "agent": d.get("name") or d.get("agent_name"),
                                      **{k: d.get(k) for k in ("exit_code", "signal", "reason", "killed_by",
                                                               "restart_count", "delay_ms") if k in d}})

        # One member at a time: five interpreters importing a framework at once on a shared machine only
        # make each import slower (imports are not part of the measured budget).
        ready: set[str] = set()
        for a in agents:
            req = {"name": a, "script": str(fw["script"]), "restart_policy": "always", "max_restarts": 20,
                   "restart_window": 300, "watchdog_ms": CLOVE_WATCHDOG_MS, "env": agent_env, "limits": limits,
                   "args": [fw["clove"]] if fw["lang"] == "python" else []}
            if fw["lang"] == "python":
                req["python"] = str(VENV_PY)
            r = client.call_json(SyscallOp.SYS_SPAWN, req)
            if not (isinstance(r, dict) and r.get("success")):
                raise RuntimeError(f"SPAWN {a}: {r}")
            deadline = time.time() + cfg.startup_timeout
            while a not in ready:
                for ev in logs.poll():
                    events.append(ev)
                    if ev.get("ev") == "ready":
                        ready.add(ev["agent"])
                drain_kernel_events()
                if time.time() >= deadline or proc.poll() is not None:
                    raise RuntimeError(f"member {a} not ready {cfg.startup_timeout} s after its SPAWN "
                                       f"(kernel events {kernel_events[-10:]}; its last lines {logs.other[a][-15:]})")
                time.sleep(0.05)

        t0 = time.time()
        events.append({"ev": "start", "t": t0, "_recv": t0, "framework": name, "fault": fault, "pid": proc.pid,
                       "agents": agents, "duration": cfg.duration, "fault_at": cfg.fault_at})
        token = {"item": 0, "holder": agents[0], "counts": {a: 0 for a in agents}, "t0": t0}
        r = client.send_message(token, to=agents[0])
        if not r.get("success"):
            raise RuntimeError(f"SEND item 0 to {agents[0]}: {r}")
        deadline = t0 + cfg.duration + cfg.grace
        while True:
            new = logs.poll()
            events.extend(new)
            drain_kernel_events()
            if any(e.get("ev") == "end" for e in new):
                t_exit = time.time()
                break
            if proc.poll() is not None:  # the kernel itself died: every agent with it
                t_exit, rc = time.time(), proc.returncode
                break
            if time.time() >= deadline:
                alive_at_timeout = True
                break
            time.sleep(0.02)
        stats = cg.stat()
        if rc is None:
            rows = client.list_agents()
            drain_kernel_events()
    finally:
        if client is not None:
            client.close()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the kernel stops its agents
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        try:
            killed = cg.kill_all()
        finally:
            cg.remove()
            for a, path in logs.paths.items():
                if path.exists():
                    shutil.copy(path, case_dir / f"{a}.log")
            shutil.rmtree(root, ignore_errors=True)
    events.extend(logs.poll() if data.exists() else [])
    if rc is None:
        rc = 0 if not alive_at_timeout else None  # completed: the harness stopped the kernel after "end"
    t_done = time.time()
    events.sort(key=lambda e: e.get("t", 0))
    res = analyse(name, fault, cfg, events, dict(
        returncode=rc, alive_at_timeout=alive_at_timeout, t_launch=t_launch, t_exit=t_exit, t_done=t_done,
        stats=stats, killed_at_end=killed, stray_processes_at_end=killed, stderr="\n".join(logs.other[fa]),
        bad_lines=logs.bad, stdout_log=str(case_dir), stderr_log=str(case_dir / f"{fa}.log")))
    res["process"]["what"] = "the Clove kernel and its agents (one process per member)"
    clove_recovery(res, events, kernel_events, rows, cfg, fw["clove"], limits, logs.other[fa])
    return res


def clove_recovery(res: dict, events: list[dict], kernel_events: list[dict], rows: list[dict],
                   cfg: argparse.Namespace, base: str, limits: dict, notes: list[str]) -> None:
    """What Clove did about the faulty member: its exits (from the kernel's events), its restarts, and when
    the restarted process did its first item (the failed agent back)."""
    fa = res["faulty_agent"]
    t0 = next(e["t"] for e in events if e.get("ev") == "start")
    f_ev = next((e for e in events if e.get("ev") == "fault"), None)
    rel = lambda t: round(t - t0, 3)  # noqa: E731
    exits = [e for e in kernel_events if e["type"] == "AGENT_EXITED" and e.get("agent") == fa and e["t"] >= t0]
    restarts = {r.get("name"): r.get("restarts", 0) for r in rows}
    readies = [e for e in events if e.get("ev") == "ready" and e["agent"] == fa and e["t"] > t0]
    res["clove"] = {
        "watchdog_ms": CLOVE_WATCHDOG_MS,
        "per_agent_limits": {"memory_mib": limits["memory"] >> 20, "pids": limits["max_pids"],
                             "cpu_cores": limits["cpu_quota"] / limits["cpu_period"]},
        "case_cgroup": {"memory_mib": (cfg.agents + 1) * cfg.mem_mib, "pids_max": (cfg.agents + 1) * cfg.pids_max,
                        "cpu_cores": cfg.cpu_cores},
        "restarts": restarts,
        "faulty_agent_exits": [{"at_s": rel(e["t"]), **{k: v for k, v in e.items() if k not in ("t", "type", "agent")}}
                               for e in exits],
        "faulty_agent_ready_again_at_s": [rel(e["t"]) for e in readies],
        "kernel_events": [{"at_s": rel(e["t"]), **{k: v for k, v in e.items() if k != "t"}} for e in kernel_events
                          if e["t"] >= t0],
    }
    rec = res.get("recovery")
    if rec is None or f_ev is None:
        return
    restarted = any(e["type"] == "AGENT_RESTARTING" and e.get("agent") == fa and e["t"] >= t0 for e in kernel_events)
    if restarted:
        back = next((e for e in events if e.get("ev") == "progress" and e["agent"] == fa and e["t"] > readies[0]["t"]),
                    None) if readies else None
        ex = exits[0] if exits else {}
        if ex.get("reason") == "oom":
            how = f"OOM-killed at its {limits['memory'] >> 20} MiB memory limit"
        elif any("watchdog:" in line for line in notes):
            how = f"killed by the watchdog after {CLOVE_WATCHDOG_MS / 1000:g} s without a syscall" + (
                f"; its pids limit of {limits['max_pids']} had been reached" if ex.get("reason") == "pids" else "")
        elif ex.get("signal"):
            how = f"signal {ex['signal']}"
        else:
            how = f"exit code {ex.get('exit_code')}"
        res["clove"]["faulty_agent_ended"] = how
        rec.update(process_restarted=True, failed_agent_resumed=back is not None,
                   resume_latency_s=round(back["t"] - f_ev["t"], 3) if back else None,
                   down_for_s=round(readies[0]["t"] - ex["t"], 3) if ex and readies else None)
        ended = f"restarted by Clove: {fa}'s process ended ({how}) at {rel(ex['t']) if ex else '?'} s"
        if readies:
            rec["mechanism"] = (f"{ended}, a new process was ready {rec['down_for_s']} s later and got the item it held "
                                "back from its mailbox (RECV lease)")
        else:
            rec["mechanism"] = (f"{ended}; the new process was still starting (interpreter and framework import) when "
                                "the harness stopped the case")
    elif rec.get("failed_agent_resumed"):
        rec["mechanism"] = MECHANISMS.get((base, res["fault"]),
                                          "in-process: the framework caught the error inside the member (no restart needed)")
    else:
        rec["mechanism"] = "not restarted"


def _rate(n: int, secs: float) -> float | None:
    return round(n / secs, 2) if secs > 0.05 else None


def analyse(name: str, fault: str, cfg, events: list[dict], r: dict) -> dict:
    fa = f"a{cfg.fault_agent}"
    starts = [e for e in events if e.get("ev") == "start"]
    st = starts[0] if starts else None
    f_ev = next((e for e in events if e.get("ev") == "fault"), None)
    end_ev = next((e for e in events if e.get("ev") == "end"), None)
    prog = [e for e in events if e.get("ev") == "progress"]
    rc = r["returncode"]
    res: dict = {"framework": name, "fault": fault, "fault_description": FAULT_TEXT[fault], "faulty_agent": fa}
    t0 = st["t"] if st else r["t_launch"]
    rel = lambda t: round(t - t0, 3) if t is not None else None  # noqa: E731
    res["startup_s"] = round(st["t"] - r["t_launch"], 3) if st else None
    res["fault_injected_at_s"] = rel(f_ev["t"]) if f_ev else None

    # ---- process
    if r["alive_at_timeout"]:
        p_outcome = "alive_at_timeout (killed by harness)"
    elif end_ev:
        p_outcome = "completed"
    elif rc is not None and rc < 0:
        p_outcome = f"killed_by_signal {signal.Signals(-rc).name}"
    else:
        p_outcome = f"exited code {rc}"
    oom = bool(r["stats"].get("oom_kills")) and rc is not None and rc < 0 and -rc == signal.SIGKILL and fault != "sigkill"
    res["process"] = {
        "outcome": p_outcome,
        "exit_code": rc if rc is not None and rc >= 0 and not r["alive_at_timeout"] else None,
        "signal": signal.Signals(-rc).name if rc is not None and rc < 0 and not r["alive_at_timeout"] else None,
        "oom_killed": oom,
        "alive_at_timeout": r["alive_at_timeout"],
        "ended_at_s": rel(r["t_exit"]) if r["t_exit"] else None,
        "harness_killed_pids": r["killed_at_end"],
        "extra_processes_in_cgroup_at_end": r["stray_processes_at_end"],
        **r["stats"],
    }
    # last informative stderr line (the error the framework surfaced, if any)
    lines = [l for l in r["stderr"].splitlines() if l.strip() and not NOISE.search(l)]
    errline = next((l.strip() for l in reversed(lines)
                    if re.search(r"Error|Exception|Segmentation|Killed|Fatal|fault", l)), None)
    res["stderr_last_error"] = errline[:300] if errline else None
    res["wall_s"] = round(r["t_done"] - r["t_launch"], 3)

    # ---- progress of the others and of the faulty agent
    others = [e for e in prog if e["agent"] != fa]
    mine = [e for e in prog if e["agent"] == fa]
    tf = f_ev["t"] if f_ev else None
    obs_end = r["t_exit"] if r["t_exit"] else (t0 + cfg.duration + cfg.grace)
    work_end = min(obs_end, t0 + cfg.duration)
    counts = {}
    for e in prog:
        counts[e["agent"]] = max(counts.get(e["agent"], 0), e["n"])
    res["steps_per_agent"] = counts
    if tf is not None:
        before = [e for e in others if e["t"] <= tf]
        after = [e for e in others if e["t"] > tf]
        last_other = max((e["t"] for e in others), default=None)
        res["others"] = {
            "steps_before_fault": len(before),
            "steps_after_fault": len(after),
            "rate_before_per_s": _rate(len(before), tf - t0),
            "rate_after_per_s": _rate(len(after), max(0.0, work_end - tf)),
            "last_progress_s": rel(last_other),
            "kept_working_for_s_after_fault": round(max(0.0, last_other - tf), 3) if last_other else 0.0,
            "silent_for_s_at_end": round(obs_end - last_other, 3) if last_other else None,
        }
        m_after = [e for e in mine if e["t"] > tf]
        res["faulty_agent_steps_after_fault"] = len(m_after)
        resumed = bool(m_after) and fault != "leak"
        res["recovery"] = {
            "failed_agent_resumed": resumed,
            "resume_latency_s": round(m_after[0]["t"] - tf, 3) if resumed else None,
            "process_restarted": len({e.get("pid") for e in starts}) > 1,
            "mechanism": None,
        }
    else:
        res["others"] = {"steps_total": len(others), "rate_per_s": _rate(len(others), work_end - t0),
                         "last_progress_s": rel(max((e["t"] for e in others), default=None))}
        res["recovery"] = None
    # ring integrity: every item should be done by the agent that holds it, once, in order
    items = [e["item"] for e in prog]
    res["integrity"] = {
        "items_done_by_wrong_agent": sum(1 for e in prog if e.get("holder") != e["agent"]),
        "items_duplicated": len(items) - len(set(items)),
        "items_out_of_order": sum(1 for a, b in zip(items, items[1:]) if b < a),
    }
    res["tool_errors_reported_by_framework"] = [e.get("detail") for e in events if e.get("ev") == "tool_error_seen"]
    res["end_event"] = {k: v for k, v in end_ev.items() if k not in ("t", "_recv", "ev")} if end_ev else None

    # ---- verdict on the OTHER agents
    o = res["others"]
    integrity_broken = any(res["integrity"].values())
    if fault == "none":
        verdict = "continued" if end_ev and len(counts) == cfg.agents else "failed_baseline"
    elif tf is None:
        verdict = "fault_not_reached"
    elif r["alive_at_timeout"]:
        verdict = "hung" if (o["silent_for_s_at_end"] or 0) >= 2.0 else "continued_past_budget"
    elif not end_ev:
        verdict = "died"
    else:
        verdict = "continued"
        if res["integrity"]["items_duplicated"] or res["integrity"]["items_out_of_order"]:
            verdict = "corrupted"
        elif integrity_broken:
            verdict = "continued_with_loss"
        elif o["rate_before_per_s"] and o["rate_after_per_s"] is not None and \
                o["rate_after_per_s"] < 0.5 * o["rate_before_per_s"]:
            verdict = "degraded"
    res["others_outcome"] = verdict
    if res["recovery"]:
        mech = "none (no restart; in-process framework)"
        if res["recovery"]["failed_agent_resumed"]:
            mech = MECHANISMS.get((name, fault),
                                  "in-process: the framework caught the error and the agent ran again (not a restart)")
        res["recovery"]["mechanism"] = mech
    res["harness"] = {"stdout_log": r["stdout_log"], "stderr_log": r["stderr_log"],
                      "unparsed_stdout_lines": r["bad_lines"]}
    return res


# ----------------------------------------------------------------------------- report
def fmt_process(p: dict) -> str:
    s = p["outcome"]
    if p.get("oom_killed"):
        s += " (OOM-killed by the memory cgroup)"
    return s


def short_row(r: dict) -> list[str]:
    o, rec, p = r.get("others") or {}, r.get("recovery"), r["process"]
    if r["fault"] == "none":
        after = f"{o.get('steps_total')} steps, {o.get('rate_per_s')}/s"
    else:
        after = (f"{o.get('steps_after_fault')} steps after fault, for {o.get('kept_working_for_s_after_fault')} s"
                 if "steps_after_fault" in o else "-")
    clove = r.get("clove") or {}
    if rec is None:
        recs = "-"
    elif rec.get("process_restarted") and rec["failed_agent_resumed"]:
        recs = f"yes: restarted by Clove, next item done {rec['resume_latency_s']} s after the fault"
    elif rec.get("process_restarted") and clove.get("faulty_agent_ready_again_at_s"):
        recs = (f"restarted by Clove (ready again at {clove['faulty_agent_ready_again_at_s'][0]} s), "
                "no item done before the case ended")
    elif rec.get("process_restarted"):
        recs = "restarted by Clove, still starting when the case ended"
    elif rec["failed_agent_resumed"]:
        recs = f"resumed in-process after {rec['resume_latency_s']} s (no restart)"
    else:
        recs = "no"
    integ = r.get("integrity") or {}
    flags = []
    if clove.get("faulty_agent_ended"):
        flags.append(f"{r['faulty_agent']}: {clove['faulty_agent_ended']}")
    if integ.get("items_done_by_wrong_agent"):
        flags.append(f"{integ['items_done_by_wrong_agent']} item(s) skipped the faulty agent")
    if integ.get("items_duplicated"):
        flags.append(f"{integ['items_duplicated']} duplicated")
    if r.get("tool_errors_reported_by_framework"):
        flags.append("framework turned the exception into a tool-error message")
    if r["fault"] == "forkbomb" and p.get("peak_pids") and clove:
        flags.append(f"case pids cgroup peak {p['peak_pids']} tasks (kernel and all members; {r['faulty_agent']}'s own "
                     f"limit {clove.get('per_agent_limits', {}).get('pids')})")
    elif r["fault"] == "forkbomb" and p.get("peak_pids"):
        flags.append(f"pids cgroup peak {p['peak_pids']} tasks (threads+processes), "
                     f"{p.get('fork_rejections', 0)} forks refused at pids.max")
    if r["fault"] in ("leak",) and p.get("peak_memory_mib"):
        flags.append(f"peak {p['peak_memory_mib']} MiB" + (" (kernel and all members)" if clove else ""))
    if r["fault"] in ("cpu", "forkbomb") and p.get("cpu_s") is not None:
        flags.append(f"{p['cpu_s']} CPU-s used")
    if r.get("stderr_last_error") and r["fault"] in ("exception", "segfault", "leak"):
        flags.append(f"stderr: `{r['stderr_last_error'][:110]}`")
    if r.get("error"):
        flags.append(f"harness error: {r['error'][:200]}")
    return [r["fault"], f"**{r['others_outcome']}**", fmt_process(p), after, recs, f"{r['wall_s']}", "; ".join(flags)]


def write_reports(doc: dict, json_path: Path, md_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    m = doc["machine"]
    s = doc["settings"]
    out = ["# Rivals under fault: what happens to the other agents when one agent fails", "",
           f"Generated {doc['generated_at']} by `{doc['command']}` in {doc['total_runtime_s']} s "
           f"(machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, kernel {m['kernel']}, "
           + (f"load average {m['load_avg_at_start'][0]} at the start and {m['load_avg_at_end'][0]} at the end (a shared "
              "machine), " if m.get("load_avg_at_start") and m.get("load_avg_at_end") else "") +
           f"Python {m['python_workloads']}, Node {m['node']}).", "",
           "Reproduce: `bash bench/rivals/setup.sh && python3 bench/rivals/run.py` "
           "(root needed for the cgroups; `--quick`, `--frameworks`, `--faults` for subsets). "
           "Machine-readable data: `reports/rivals.json`. Every number below comes from that run; nothing is estimated.", "",
           "## Workload", "",
           f"The same workload in every framework: a ring of {s['agents']} agents (a0 -> a1 -> ... -> a{s['agents']-1} -> a0) "
           f"built with the framework's own multi-agent construct and driven by the framework's own fake/replay model "
           f"(no network, no real LLM). Every agent turn is one fake-model call plus one call of the agent's `work` tool, "
           f"which takes the numbered work item from the previous agent, works {s['work_ms']} ms and hands item+1 on. "
           f"The workload stops itself after {s['duration_s']} s. At {s['fault_at_s']} s agent a{s['fault_agent']} "
           f"injects the fault from inside its tool (agent code). Each agent prints a timestamped JSON line per finished item; "
           f"the verdicts are computed from those lines. Each case runs in fresh cgroup-v1 groups: memory {s['memory_limit_mib']} MiB "
           f"(memsw the same), pids.max {s['pids_max']}, cpu quota {s['cpu_quota_cores']} cores; the harness waits until "
           f"{s['grace_s']} s after the time budget, then SIGKILLs every process in the groups and removes them.", "",
           "Verdict on the *other* agents: **continued** (worked to the end of the budget), **continued_with_loss** (worked on, "
           "but a work item passed the faulty agent unprocessed), **degraded** (<50% of their pre-fault rate), **hung** (process "
           "alive, no progress for >= 2 s at the deadline), **died** (the process ended before the budget: every agent is gone), "
           "**corrupted** (items duplicated or out of order).", "",
           "A ring is a chain: in a turn-based design a stuck agent stalls the agents after it, so `hang`/`cpu`/`forkbomb` "
           "measure shared fate inside one orchestration loop. Only this ring topology was measured; fan-out designs (e.g. "
           "LangGraph parallel branches, CrewAI async tasks, AutoGen GraphFlow) were not. What the ring does not change: "
           "all agents live in one OS process, so process-level faults (SIGKILL, segfault, OOM) end all of them in any topology.", ""]
    cs = s.get("clove")
    if cs:
        out += [f"**Under Clove** (the \"… under Clove\" rows): the same ring, work items, faults and verdicts, but each of "
                f"a0..a{s['agents'] - 1} is its own Clove agent, a process of its own under a Clove kernel that run.py starts "
                "(`node bin/clove.js kernel` on a temporary socket and data dir, inside the case's cgroups). Each member runs the "
                "framework's own construct for its own turn only, built from the bare workload's code with the same fake model "
                "(a one-agent Crew, a one-node StateGraph, one AssistantAgent), and hands the item on with the kernel's SEND; it "
                "takes the item with RECV under a lease, so the item a member held when its process died goes back to its "
                "mailbox and the restarted member does it. Every member has `restart_policy: always`, a watchdog of "
                f"{cs['watchdog_ms'] / 1000:g} s (killed and restarted when it makes no syscall that long outside a blocking RECV) "
                f"and the bare program's limits as its own (memory {s['memory_limit_mib']} MiB, pids.max {s['pids_max']}, "
                f"{s['cpu_quota_cores']} cores). The case's cgroups hold the kernel and all members: memory and pids "
                f"{s['agents'] + 1} times the bare case's, CPU the same {s['cpu_quota_cores']} cores. Members are started one "
                "after another and the budget starts when all of them said they were ready (imports excluded, as for the bare "
                "rows). The fault fires once per case: a2 notes it in its own agent-scoped key before injecting it, so the "
                "restarted a2 runs the same code without the transient fault (a fault that comes back on every start was not "
                "measured). A ring stalls while any member is down: the others' rate after the fault includes a2's downtime "
                "(for hang, cpu and forkbomb the watchdog's delay, then for every fault the new interpreter's start and the "
                "framework's import). \"back in\" is the time from the fault to the first item the restarted a2 finished.", ""]
    out += ["## Summary (verdict on the other agents)", ""]
    faults = [f for f in FAULTS if any(r["fault"] == f for r in doc["results"])]
    fws = [n for n in doc["frameworks"]]
    out.append("| framework | " + " | ".join(faults) + " |")
    out.append("|---|" + "---|" * len(faults))
    for n in fws:
        fi = doc["frameworks"][n]
        cells = []
        for f in faults:
            r = next((x for x in doc["results"] if x["framework"] == n and x["fault"] == f), None)
            rec = (r or {}).get("recovery") or {}
            back = ""
            if rec.get("process_restarted"):
                back = (f", {r['faulty_agent']} back in {rec['resume_latency_s']} s" if rec.get("failed_agent_resumed")
                        else f", {r['faulty_agent']} restarted, no item before the end")
            cells.append(r["others_outcome"] + back if r else "not run")
        out.append(f"| {fi['label']} {fi.get('version', '')} | " + " | ".join(cells) + " |")
    out.append("")
    restarted = [r for r in doc["results"] if (r.get("recovery") or {}).get("process_restarted")]
    bare_restarted = [r for r in restarted if not doc["frameworks"][r["framework"]].get("clove")]
    out.append("Anything restarted the failed agent? " + (
        "No framework run bare restarted a process in any case. " if not bare_restarted else "")
        + "Cases where the failed agent ran again in the same process (the framework caught the error): " + (", ".join(
            f"{doc['frameworks'][r['framework']]['label']}/{r['fault']} (after {r['recovery']['resume_latency_s']} s)"
            for r in doc["results"] if (r.get("recovery") or {}).get("failed_agent_resumed")
            and not r["recovery"].get("process_restarted")) or "none") + ". "
        + (f"Under Clove the failed agent's process was restarted in {len(restarted)} of "
           f"{sum(1 for r in doc['results'] if doc['frameworks'][r['framework']].get('clove') and r['fault'] != 'none')} "
           f"fault cases and did its next item in {sum(1 for r in restarted if r['recovery']['failed_agent_resumed'])} of "
           "them within the budget (\"back in\" above: from the fault to that item)."
           if any(doc["frameworks"][n].get("clove") for n in fws) else ""))
    starts = {}
    for n in fws:
        if doc["frameworks"][n].get("clove"):
            per = sorted(r["startup_s"] / s["agents"] for r in doc["results"] if r["framework"] == n and r.get("startup_s"))
            if per:
                starts[doc["frameworks"][n]["label"]] = round(per[len(per) // 2], 1)
    if starts:
        out += ["", "How long one member took to start under Clove (a new interpreter and the framework's import; the "
                "median over this run's cases of `startup_s` / " + str(s["agents"]) + ", members started one at a time): "
                + ", ".join(f"{k} {v} s" for k, v in starts.items()) + ". A restarted member is back no sooner than that "
                "(plus the watchdog's delay for hang, cpu and forkbomb); the machine's load during the run (above) "
                "stretches it."]
    out.append("")
    for n in fws:
        fi = doc["frameworks"][n]
        out += [f"## {fi['label']}", ""]
        if not fi["available"]:
            out += [f"Could not be installed or run here. Exact error:", "", "```", (fi["error"] or "")[-3000:], "```", ""]
            continue
        out += [f"Versions: " + ", ".join(f"{k}=={v}" for k, v in fi["packages"].items()) + f" ({fi.get('runtime')}).",
                f"Topology: {fi['topology']}. Model: {fi['fake_model']}.", ""]
        out.append("| fault | other agents | process | others' work after the fault | failed agent back? | wall s | notes |")
        out.append("|---|---|---|---|---|---|---|")
        for r in doc["results"]:
            if r["framework"] == n:
                out.append("| " + " | ".join(x.replace("|", "\\|") for x in short_row(r)) + " |")
        notes = doc.get("notes", {}).get(n)
        if notes:
            out += ["", *notes]
        out.append("")
    if doc.get("general_notes"):
        out += ["## Notes", "", *doc["general_notes"], ""]
    md_path.write_text("\n".join(out))


def framework_notes(results: list[dict]) -> dict:
    """Plain-English notes derived from the measured results (nothing here is assumed)."""
    notes: dict[str, list[str]] = {}
    for r in results:
        n, f = r["framework"], r["fault"]
        p, o, rec = r["process"], r.get("others") or {}, r.get("recovery") or {}
        line = None
        if FRAMEWORKS.get(n, {}).get("clove"):
            line = clove_note(r)
        elif f == "exception":
            if r["others_outcome"] == "died":
                line = (f"- exception: the exception propagated out of the framework's run call and ended the whole program "
                        f"({p['outcome']}); the other {len(r['steps_per_agent']) - 1} agents stopped with it.")
            elif rec.get("failed_agent_resumed") and (n, f) in MECHANISMS:
                line = f"- exception ({rec['resume_latency_s']} s until a{r['faulty_agent'][1:]} worked again): " + MECHANISMS[(n, f)] + "."
            elif rec.get("failed_agent_resumed"):
                wrong = r["integrity"]["items_done_by_wrong_agent"]
                line = (f"- exception: the framework caught it; a{r['faulty_agent'][1:]} ran again {rec['resume_latency_s']} s later "
                        f"in the same process" + (f", but {wrong} work item(s) went on without being processed by it"
                                                  if wrong else " and re-did the item (a retry, not a restart)") + ".")
        elif f == "leak" and p.get("oom_killed"):
            line = (f"- leak: the other agents kept going for {o.get('kept_working_for_s_after_fault')} s while memory grew, "
                    f"then the kernel OOM-killed the single process (peak {p.get('peak_memory_mib')} MiB) and every agent died.")
        elif f in ("hang", "cpu", "forkbomb") and r["others_outcome"] == "hung":
            line = (f"- {f}: the process stayed alive but the other agents made no progress for "
                    f"{o.get('silent_for_s_at_end')} s until the harness killed it; nothing noticed or restarted a{r['faulty_agent'][1:]}.")
        if line:
            notes.setdefault(n, []).append(line)
    return notes


def clove_note(r: dict) -> str | None:
    """What Clove did about the faulty member in one case, in a sentence (from the measured result)."""
    f, o, rec, c = r["fault"], r.get("others") or {}, r.get("recovery") or {}, r.get("clove") or {}
    if f == "none" or not rec:
        return None
    after = (f"the other agents did {o.get('steps_after_fault')} items after the fault "
             f"({o.get('rate_after_per_s')}/s against {o.get('rate_before_per_s')}/s before)")
    if not rec.get("process_restarted"):
        how = (f" ({rec['mechanism']})" if rec.get("failed_agent_resumed") and rec.get("mechanism") else "")
        return f"- {f}: no member's process ended, so Clove had nothing to restart{how}; {after}."
    if rec["failed_agent_resumed"]:
        back = (f"its new process was ready {rec.get('down_for_s')} s after the old one ended and finished its "
                f"next item {rec['resume_latency_s']} s after the fault")
    elif rec.get("down_for_s") is not None:
        back = f"its new process was ready {rec['down_for_s']} s after the old one ended, too late for an item"
    else:
        back = "its new process was still starting (interpreter and framework import) when the harness stopped the case"
    return (f"- {f}: {r['faulty_agent']}'s process ended ({c.get('faulty_agent_ended')}) and Clove restarted it; "
            f"{back}; {after}.")


# ----------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="faults none,sigkill,exception,hang with a 6 s budget")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma list of " + ",".join(FRAMEWORKS))
    ap.add_argument("--faults", default=None, help="comma list of " + ",".join(FAULTS))
    ap.add_argument("--duration", type=float, default=None, help="work budget per case, s (default 10, quick 6)")
    ap.add_argument("--fault-at", type=float, default=None, help="s after start (default 3, quick 2)")
    ap.add_argument("--grace", type=float, default=5.0, help="s after the budget before the harness kills the case")
    ap.add_argument("--startup-timeout", type=float, default=90.0)
    ap.add_argument("--agents", type=int, default=5)
    ap.add_argument("--fault-agent", type=int, default=2)
    ap.add_argument("--work-ms", type=float, default=20)
    ap.add_argument("--mem-mib", type=int, default=512)
    ap.add_argument("--pids-max", type=int, default=64)
    ap.add_argument("--cpu-cores", type=float, default=1.5)
    ap.add_argument("--json", default=str(REPO / "reports" / "rivals.json"))
    ap.add_argument("--md", default=str(REPO / "reports" / "rivals.md"))
    ap.add_argument("--logdir", default="/tmp/clove-rivals-logs")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing: re-render --md from the existing --json (e.g. after adding a clove entry)")
    cfg = ap.parse_args()
    if cfg.render_only:
        write_reports(json.loads(Path(cfg.json).read_text()), Path(cfg.json), Path(cfg.md))
        print(f"rendered {cfg.md} from {cfg.json}")
        return 0
    if cfg.duration is None:
        cfg.duration = 6.0 if cfg.quick else 10.0
    if cfg.fault_at is None:
        cfg.fault_at = 2.0 if cfg.quick else 3.0
    faults = (cfg.faults.split(",") if cfg.faults else (QUICK_FAULTS if cfg.quick else FAULTS))
    fws = [f for f in cfg.frameworks.split(",") if f]
    for f in faults:
        if f not in FAULTS:
            ap.error(f"unknown fault {f}")
    for f in fws:
        if f not in FRAMEWORKS:
            ap.error(f"unknown framework {f}")
    if os.geteuid() != 0 or not (CG_ROOT / "pids" / "cgroup.procs").exists():
        sys.exit("run.py needs root and cgroup v1 memory/pids/cpu/cpuacct hierarchies under /sys/fs/cgroup")
    os.makedirs(cfg.logdir, exist_ok=True)
    cleanup_stale()

    t_all = time.time()
    machine = machine_info()
    frameworks, results = {}, []
    seq = 0
    try:
        for n in fws:
            info = probe_framework(n)
            frameworks[n] = info
            print(f"== {info['label']}: " + (f"{info.get('packages')}" if info["available"] else f"UNAVAILABLE: {info['error'][:300]}"),
                  flush=True)
            if not info["available"]:
                continue
            for f in faults:
                seq += 1
                try:
                    res = run_case(n, f, cfg, seq)
                except Exception as e:  # harness error: record, never invent data
                    res = {"framework": n, "fault": f, "others_outcome": "harness_error", "error": repr(e),
                           "process": {"outcome": "harness_error"}, "integrity": {}, "wall_s": None}
                res["version"] = info["version"]
                results.append(res)
                o = res.get("others") or {}
                print(f"   {f:10s} others={res['others_outcome']:20s} process={res['process']['outcome']:40s} "
                      f"wall={res['wall_s']}s after_fault={o.get('steps_after_fault', '-')}", flush=True)
    finally:
        cleanup_stale()
        remove_base()
    total = round(time.time() - t_all, 1)
    machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    argv = " ".join(sys.argv[1:])
    doc = {
        "schema": "clove-rivals/1",
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python3 bench/rivals/run.py" + (f" {argv}" if argv else ""),
        "total_runtime_s": total,
        "machine": machine,
        "settings": {"agents": cfg.agents, "fault_agent": cfg.fault_agent, "duration_s": cfg.duration, "fault_at_s": cfg.fault_at,
                     "grace_s": cfg.grace, "work_ms": cfg.work_ms, "memory_limit_mib": cfg.mem_mib, "pids_max": cfg.pids_max,
                     "cpu_quota_cores": cfg.cpu_cores, "quick": cfg.quick,
                     **({"clove": {"watchdog_ms": CLOVE_WATCHDOG_MS, "restart_policy": "always",
                                   "per_agent_limits": {"memory_mib": cfg.mem_mib, "pids_max": cfg.pids_max,
                                                        "cpu_cores": cfg.cpu_cores},
                                   "case_cgroup": {"memory_mib": (cfg.agents + 1) * cfg.mem_mib,
                                                   "pids_max": (cfg.agents + 1) * cfg.pids_max,
                                                   "cpu_cores": cfg.cpu_cores}}}
                        if any(FRAMEWORKS[n].get("clove") for n in fws) else {})},
        "fault_kinds": {f: FAULT_TEXT[f] for f in faults},
        "frameworks": frameworks,
        "results": results,
        "notes": framework_notes([r for r in results if "others" in r]),
        "general_notes": GENERAL_NOTES,
    }
    write_reports(doc, Path(cfg.json), Path(cfg.md))
    print(f"total {total} s -> {cfg.json}, {cfg.md}")
    return 0


# Where a framework caught a fault, what did it (checked in the pinned sources; only used when the
# measured run shows the failed agent running again).
MECHANISMS = {
    ("crewai", "exception"): "in-process retry: CrewAI's ToolUsage catches an exception raised by a tool and re-runs "
                             "the same tool call (up to 3 attempts, crewai/tools/tool_usage.py); silent with verbose=False. "
                             "Not a restart: same process, same state",
    ("autogen", "exception"): "in-process: AssistantAgent catches the tool's exception and returns it as a "
                              "FunctionExecutionResult(is_error=True) message; the team goes on with the next speaker and "
                              "the failed turn's work is lost. Not a restart",
}

GENERAL_NOTES = [
    "- Run bare, all four frameworks run every agent inside one OS process (one interpreter / one event loop). A fault that kills the "
    "process (SIGKILL, segfault, OOM) takes every agent down at once, and nothing in the framework restarts anything: "
    "restarting is left to whatever launched the program.",
    "- `hang`, `cpu` and `forkbomb` leave the process alive but the turn-based orchestration waits for the stuck agent "
    "forever; none of the frameworks has a default per-agent/per-tool timeout that fired in these runs.",
    "- Node's `segfault` is a SIGSEGV sent with process.kill (pure JavaScript cannot dereference a null pointer); Python's is a real "
    "invalid read (ctypes.string_at(0)).",
    "- Node's `hang` keeps a timer alive next to the never-settling promise, standing for the stuck socket a real hang holds; "
    "with nothing pending at all, Node just exits when its event loop drains (checked separately: "
    "`node --input-type=module -e 'await new Promise(()=>{})'` exits with code 13 at once) - the program ends, nothing restarts it.",
    "- `exception` is one-shot: the faulty agent's later turns are healthy, so a framework that retries or skips the failed "
    "call can carry on. A persistent fault (raising on every call) was not measured.",
    "- Counts are per run on a shared 2-core machine; startup time (imports) is excluded from the work budget and shown "
    "as `startup_s` in the JSON. Raw per-case stdout/stderr are kept under /tmp/clove-rivals-logs/ (not committed).",
    "- Under Clove, `process` is the kernel with its agents (it completes when a member reports the end of the budget; "
    "the harness then stops the kernel), and each result has a `clove` object: restarts per member, the faulty member's "
    "exits as the kernel reported them (AGENT_EXITED: signal, reason), when its new process was ready, the limits used. "
    "Raw member and kernel logs are kept under /tmp/clove-rivals-logs/<framework>-clove-<fault>/.",
    "- The Clove rows add a kernel (Node) and one interpreter per member, so memory and startup are higher than the bare "
    "rows' (`peak_memory_mib`, `startup_s` in the JSON), and every hand-off is a SEND and a RECV through the kernel.",
]

if __name__ == "__main__":
    sys.exit(main())
