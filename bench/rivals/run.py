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

Run it with the machine's interpreter (not the venv): it only needs the stdlib and root
(for the cgroups).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV_PY = HERE / ".venv" / "bin" / "python"
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
                % (mods[name], fw["packages"]))
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
    return {"cores": os.cpu_count(), "kernel": platform.release(), "cpu_model": cpu, "memory_gib": mem,
            "python_driver": platform.python_version(), "python_workloads": vpy, "node": node,
            "os": platform.platform(), "date": _dt.datetime.now(_dt.timezone.utc).date().isoformat()}


# ----------------------------------------------------------------------------- one case
def run_case(name: str, fault: str, cfg: argparse.Namespace, seq: int) -> dict:
    fw = FRAMEWORKS[name]
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
    if rec is None:
        recs = "-"
    elif rec["failed_agent_resumed"]:
        recs = f"resumed in-process after {rec['resume_latency_s']} s (no restart)"
    else:
        recs = "no"
    integ = r["integrity"]
    flags = []
    if integ["items_done_by_wrong_agent"]:
        flags.append(f"{integ['items_done_by_wrong_agent']} item(s) skipped the faulty agent")
    if integ["items_duplicated"]:
        flags.append(f"{integ['items_duplicated']} duplicated")
    if r.get("tool_errors_reported_by_framework"):
        flags.append("framework turned the exception into a tool-error message")
    if r["fault"] == "forkbomb" and p.get("peak_pids"):
        flags.append(f"pids cgroup peak {p['peak_pids']} tasks (threads+processes), "
                     f"{p.get('fork_rejections', 0)} forks refused at pids.max")
    if r["fault"] in ("leak",) and p.get("peak_memory_mib"):
        flags.append(f"peak {p['peak_memory_mib']} MiB")
    if r["fault"] in ("cpu", "forkbomb") and p.get("cpu_s") is not None:
        flags.append(f"{p['cpu_s']} CPU-s used")
    if r.get("stderr_last_error") and r["fault"] in ("exception", "segfault", "leak"):
        flags.append(f"stderr: `{r['stderr_last_error'][:110]}`")
    return [r["fault"], f"**{r['others_outcome']}**", fmt_process(p), after, recs, f"{r['wall_s']}", "; ".join(flags)]


def write_reports(doc: dict, json_path: Path, md_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    m = doc["machine"]
    s = doc["settings"]
    out = ["# Rivals under fault: what happens to the other agents when one agent fails", "",
           f"Generated {doc['generated_at']} by `{doc['command']}` in {doc['total_runtime_s']} s "
           f"(machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, kernel {m['kernel']}, "
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
            cells.append(r["others_outcome"] if r else "not run")
        out.append(f"| {fi['label']} {fi.get('version', '')} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Anything restarted the failed agent? " + (
        "In no case was a process restarted. " if not any((r.get("recovery") or {}).get("process_restarted") for r in doc["results"]) else "")
        + "Cases where the failed agent ran again in the same process (the framework caught the error): " + (", ".join(
            f"{doc['frameworks'][r['framework']]['label']}/{r['fault']} (after {r['recovery']['resume_latency_s']} s)"
            for r in doc["results"] if (r.get("recovery") or {}).get("failed_agent_resumed")) or "none") + ".")
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
        if f == "exception":
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
    argv = " ".join(sys.argv[1:])
    doc = {
        "schema": "clove-rivals/1",
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python3 bench/rivals/run.py" + (f" {argv}" if argv else ""),
        "total_runtime_s": total,
        "machine": machine,
        "settings": {"agents": cfg.agents, "fault_agent": cfg.fault_agent, "duration_s": cfg.duration, "fault_at_s": cfg.fault_at,
                     "grace_s": cfg.grace, "work_ms": cfg.work_ms, "memory_limit_mib": cfg.mem_mib, "pids_max": cfg.pids_max,
                     "cpu_quota_cores": cfg.cpu_cores, "quick": cfg.quick},
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
    "- All four frameworks run every agent inside one OS process (one interpreter / one event loop). A fault that kills the "
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
    "- A `clove` entry can be added to `frameworks` and `results` of reports/rivals.json with the same fields "
    "(framework, version, fault, others_outcome, process{outcome, exit_code, signal, oom_killed, alive_at_timeout, ...}, "
    "others{steps_before_fault, steps_after_fault, rate_before_per_s, rate_after_per_s, kept_working_for_s_after_fault, ...}, "
    "recovery{failed_agent_resumed, resume_latency_s, process_restarted, mechanism}, wall_s).",
]

if __name__ == "__main__":
    sys.exit(main())
