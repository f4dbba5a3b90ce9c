/**
 * Warm standby (docs/supervision.md "Warm standby"; issue 17 §2). For an agent spawned with `standby: 1`
 * the pool keeps one more process of it parked before the agent's code runs: the same spawner, sandbox,
 * account, env and cwd as a restart would get, with argv `[python, -m, clove_sdk._standby, script, ...]`.
 * The launcher imports the SDK, blocks SIGUSR1 (and SIGUSR2 as a marker) and waits; the pool sees it
 * parked in /proc. When
 * the supervisor starts the agent again (a crash answered by the restart policy, or RESTART) it takes
 * the parked process instead of spawning one and sends it SIGUSR1: the script runs as `__main__`.
 * Then a new standby is prepared. The kernel maps the standby's pid to the agent at promotion
 * (supervisor.ts adopts it); before that only the connection the standby opened while parked is the
 * agent's (ownerOf, isStandbyPid: it survives the old process's exit).
 *
 * Only Python agents (argv `[python…, script, …]`) can have one; others get a note instead.
 *
 * Spare sandbox (docs/supervision.md "Spare sandbox"): every other sandboxed agent that may be restarted
 * (policy on-failure or always; the kernel's `--no-spare-sandboxes` turns it off) gets a lighter kind of
 * standby from the same pool: its next sandbox made in advance (cgroup leaf, namespaces, mounts,
 * clove-init, SpawnSpec `park`), with the agent's own argv and nothing of its program running. A restart
 * releases it (clove-init forks and execs the program) instead of spending ~4 ms of spawning before the
 * interpreter can start. It costs one parked clove-init and one more cgroup leaf per agent.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { AgentLogs } from './logs.js';
import { parentPid } from '../sandbox/procfs.js';
import type { AgentProcess } from '../sandbox/types.js';
import type { AgentRecord } from './supervisor.js';

/** LIST `standby` (the contract's StandbyInfo). */
export interface StandbyInfo {
  ready: boolean;
  pid: number;
  note?: string;
}

/** LIST `spare` (the contract's SpareInfo). */
export interface SpareInfo {
  ready: boolean;
  pid: number;
}

/** What an agent's slot keeps parked: a warm standby's interpreter, or a spare sandbox. */
export type StandbyKind = 'interpreter' | 'sandbox';

interface Slot {
  kind: StandbyKind;
  proc: AgentProcess | null;
  ready: boolean;
  /** Standbys that died parked in a row: the backoff of the next one. */
  failures: number;
  /** Which standby of the agent this is (its cgroup leaf differs from the agent's). */
  serial: number;
  timer?: NodeJS.Timeout;
  /** A spawn is under way (prepare). */
  spawning: boolean;
  /** The parked launcher's pid (the standby's root, or its program below clove-init); 0 until parked. */
  parked: number;
  /** wake() sent the promotion signal already; take() follows in the same tick. */
  woken?: boolean;
  /** The spawner started a spare sandbox's program at once (it cannot park): none is made again. */
  unsupported?: boolean;
}

/** How often a starting standby is checked for being parked, and for how long. */
const POLL_MS = 2;
const PARK_TIMEOUT_MS = 30_000;
/** SIGUSR2 (12, bit 11 of SigBlk): blocked together with SIGUSR1 by the launcher as its parked marker. */
const MARK_BIT = 1n << 11n;

export const STANDBY_MODULE = 'clove_sdk._standby';

/** The standby's argv for an agent's argv, or why it cannot have one. */
export function standbyArgv(argv: readonly string[]): string[] | { note: string } {
  const [exe, script, ...rest] = argv;
  if (!exe || !/^python[0-9.]*$/.test(path.basename(exe)))
    return { note: 'standby ignored: only Python agents (python script …) can have a warm standby' };
  if (!script || script.startsWith('-'))
    return { note: 'standby ignored: the interpreter runs no script file (python -m/-c)' };
  return [exe, '-m', STANDBY_MODULE, script, ...rest];
}

/**
 * The launcher's pid when a process of the tree of `root` is the launcher, parked; else 0. Linux lifts
 * the mask of the signals sigwait waits for while it waits, so the mark is SIGUSR2, blocked in the same
 * call as SIGUSR1.
 */
export function parkedIn(root: number): number {
  const todo = [root];
  for (let n = 0; todo.length > 0 && n < 64; n++) {
    const pid = todo.pop()!;
    try {
      // The launcher itself (`python -m clove_sdk._standby …`), not a parent naming it in its argv
      // (clove-init, which blocks every signal).
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      if (cmd[1] === '-m' && cmd[2] === STANDBY_MODULE) {
        const m = /^SigBlk:\s*([0-9a-f]+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
        if (m && (BigInt(`0x${m[1]}`) & MARK_BIT) !== 0n) return pid;
      }
      for (const t of fs.readdirSync(`/proc/${pid}/task`))
        for (const c of fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'latin1').split(' '))
          if (c.trim()) todo.push(Number(c));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return 0;
}

export interface StandbyHooks {
  log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

/** How long after an agent's first start its spare sandbox is made: an agent failing at once gets none. */
const SPARE_FIRST_DELAY_MS = 1000;

export class StandbyPool {
  private slots = new Map<number, Slot>();
  /** Pid of each standby process (the sandbox's root) -> its agent's id. */
  private owners = new Map<number, number>();
  private closed = false;
  private exits = new Set<Promise<void>>();
  private spawns = new Set<Promise<void>>();

  constructor(
    private readonly logs: AgentLogs,
    private readonly hooks: StandbyHooks,
    /** Spare sandboxes for the agents that may be restarted (false: `--no-spare-sandboxes`). */
    private readonly spares = true,
  ) {}

  /** What the agent gets parked, with the argv it is spawned with; null: nothing. */
  private kindOf(a: AgentRecord): { kind: StandbyKind; argv: string[] } | null {
    const d = a.def;
    if (d.standby) {
      const argv = standbyArgv(d.argv);
      if (Array.isArray(argv)) return { kind: 'interpreter', argv };
    }
    if (this.spares && d.spare !== false && d.policy.policy !== 'never' && d.spawner.canPark?.(d.sandboxed))
      return { kind: 'sandbox', argv: d.argv };
    return null;
  }

  /** LIST `standby` of an agent, undefined when it did not ask for one. */
  info(a: AgentRecord): StandbyInfo | undefined {
    if (!a.def.standby) return undefined;
    const argv = standbyArgv(a.def.argv);
    if (!Array.isArray(argv)) return { ready: false, pid: 0, note: argv.note };
    const s = this.slots.get(a.def.id);
    return { ready: s?.ready ?? false, pid: s?.ready && s.proc ? s.proc.pid : 0 };
  }

  /** LIST `spare` of an agent: undefined unless it keeps a spare sandbox (or is about to). */
  spare(a: AgentRecord): SpareInfo | undefined {
    const s = this.slots.get(a.def.id);
    if (s?.unsupported) return undefined;
    // No slot yet (the first spare is made a while after the start): what the running agent will get.
    const kind = s ? s.kind : a.proc ? this.kindOf(a)?.kind : undefined;
    if (kind !== 'sandbox') return undefined;
    const pid = s?.ready && s.proc ? s.proc.pid : 0;
    return { ready: pid > 0, pid };
  }

  /** Makes sure the agent has a standby (parked or on its way) when it asked for one. */
  prepare(a: AgentRecord, delayMs = 0): void {
    if (this.closed) return;
    const k = this.kindOf(a);
    if (!k) return;
    const argv = k.argv;
    let s = this.slots.get(a.def.id);
    if (!s) {
      s = { kind: k.kind, proc: null, ready: false, failures: 0, serial: 0, spawning: false, parked: 0 };
      this.slots.set(a.def.id, s);
      if (k.kind === 'sandbox' && a.restarts === 0) delayMs = Math.max(delayMs, SPARE_FIRST_DELAY_MS);
    }
    if (s.unsupported) return;
    if (s.proc || s.spawning || s.timer) return;
    const slot = s;
    const go = (): void => {
      slot.timer = undefined;
      if (this.slots.get(a.def.id) !== slot || this.closed) return;
      this.spawn(a, slot, argv);
    };
    if (delayMs > 0) slot.timer = setTimeout(go, delayMs);
    else go();
  }

  private spawn(a: AgentRecord, s: Slot, argv: string[]): void {
    const d = a.def;
    let fd: number;
    try {
      fd = this.logs.open(d.name);
    } catch (e) {
      this.hooks.log('warn', 'standby: cannot open the log file', {
        agent: d.name,
        error: (e as Error).message,
      });
      return;
    }
    s.spawning = true;
    s.serial++;
    const spare = s.kind === 'sandbox';
    const p = d.spawner.spawn({
      ...d,
      argv,
      agentId: d.id,
      logFd: fd,
      instance: `${spare ? 'spare' : 'standby'}${s.serial}`,
      ...(spare ? { park: true } : {}),
    });
    const done = p.then(
      (proc) => {
        s.spawning = false;
        if (this.slots.get(d.id) !== s || this.closed) {
          this.kill(proc);
          return;
        }
        if (spare && proc.parked !== true) {
          // The agent's program runs already: not a spare. Nothing parks for this agent again.
          s.unsupported = true;
          this.kill(proc);
          return;
        }
        s.proc = proc;
        this.owners.set(proc.pid, d.id);
        proc.onExit((info) => {
          if (this.owners.get(proc.pid) === d.id) this.owners.delete(proc.pid);
          if (s.proc !== proc) return; // promoted: the supervisor owns its exit
          s.proc = null;
          s.parked = 0;
          s.ready = false;
          const what = spare ? 'spare sandbox' : 'standby';
          this.retry(a, s, `${what} died while parked (${info.signal ?? `exit ${info.code}`})`);
        });
        if (spare) {
          // clove-init said it is parked before the spawn settled.
          s.parked = proc.pid;
          s.ready = true;
          s.failures = 0;
        } else {
          this.watch(a, s, proc, Date.now());
        }
      },
      (e: Error) => {
        s.spawning = false;
        this.hooks.log('warn', 'standby: spawn failed', { agent: d.name, error: e.message });
        this.retry(a, s, `standby: spawn failed: ${e.message}`);
      },
    );
    const settled = done.finally(() => {
      fs.closeSync(fd);
      this.spawns.delete(settled);
    });
    this.spawns.add(settled);
  }

  /**
   * A standby died (parked or starting) or could not be spawned: a new one after a backoff of its own
   * (the agent's backoff_initial_ms, at least 100 ms, × backoff_multiplier per failure in a row, at most
   * backoff_max_ms). The agent itself is not touched.
   */
  private retry(a: AgentRecord, s: Slot, why: string): void {
    clearTimeout(s.timer);
    s.timer = undefined;
    if (this.slots.get(a.def.id) !== s || this.closed) return;
    s.failures++;
    const p = a.def.policy;
    const delay = Math.min(
      Math.max(p.backoffInitialMs, 100) * Math.pow(p.backoffMultiplier, s.failures - 1),
      Math.max(p.backoffMaxMs, 100),
    );
    this.logs.note(a.def.name, `${why}; a new one in ${delay} ms`);
    this.prepare(a, delay);
  }

  /** Polls until the standby is parked (then it is ready), or gives up on it. */
  private watch(a: AgentRecord, s: Slot, proc: AgentProcess, since: number): void {
    if (s.proc !== proc) return;
    const parked = parkedIn(proc.pid);
    if (parked) {
      s.parked = parked;
      s.ready = true;
      s.failures = 0;
      return;
    }
    if (Date.now() - since > PARK_TIMEOUT_MS) {
      this.logs.note(a.def.name, `standby: not parked after ${PARK_TIMEOUT_MS} ms; killed`);
      proc.signal('SIGKILL');
      return;
    }
    s.timer = setTimeout(() => {
      s.timer = undefined;
      this.watch(a, s, proc, since);
    }, POLL_MS);
  }

  /** The agent whose standby (parked, or being promoted) `pid` is: what a standby's connection identifies as. */
  ownerOf(pid: number): number | undefined {
    return this.owners.get(pid);
  }

  /**
   * True when `pid` is the agent's standby process or its direct child (the program below a sandbox's
   * clove-init): its connection, opened while parked, outlives the agent's old process.
   */
  isStandbyPid(id: number, pid: number): boolean {
    const s = this.slots.get(id);
    const root = s?.proc?.pid;
    if (root === undefined) return false;
    if (pid === root || pid === s!.parked) return true;
    return !s!.ready && parentPid(pid) === root; // connected before the pool saw it parked
  }

  /** True when the agent has a parked standby ready to be promoted. */
  ready(a: AgentRecord): boolean {
    const s = this.slots.get(a.def.id);
    return !!s && s.ready && s.proc !== null;
  }

  /**
   * Promotion: the agent's parked standby, woken (SIGUSR1), or null when none is ready. The caller
   * (the supervisor's launch) adopts it as the agent's process; a new standby is prepared once the
   * agent is running again.
   */
  take(a: AgentRecord): { proc: AgentProcess; kind: StandbyKind } | null {
    const s = this.slots.get(a.def.id);
    if (!s || !s.ready || !s.proc) return null;
    const proc = s.proc;
    s.proc = null;
    s.parked = 0;
    s.ready = false;
    this.owners.delete(proc.pid);
    if (!s.woken) this.go(s, proc);
    s.woken = false;
    return { proc, kind: s.kind };
  }

  /** The promotion signal: a spare sandbox is released, a parked interpreter gets SIGUSR1. */
  private go(s: Slot, proc: AgentProcess): void {
    if (s.kind === 'sandbox') proc.release?.();
    else proc.signal('SIGUSR1');
  }

  /**
   * Sends the promotion signal ahead of take(), when the supervisor knows the agent restarts at once
   * (an exit with no backoff): take() follows in the same tick, before any connection is served.
   */
  wake(a: AgentRecord): void {
    const s = this.slots.get(a.def.id);
    if (!s || !s.ready || !s.proc || s.woken) return;
    s.woken = true;
    if (s.kind === 'sandbox') {
      this.go(s, s.proc);
      return;
    }
    // Sandboxed, straight to the parked launcher (clove-init's child) while it still is that: through
    // clove-init the promotion would wait for init to be scheduled as well, on a machine busy tearing the
    // old sandbox down (measured: up to 1.8 ms). A pid is not reused while it is init's zombie, and once
    // reaped it is not init's child any more.
    if (s.parked && s.parked !== s.proc.pid && parentPid(s.parked) === s.proc.pid) {
      try {
        process.kill(s.parked, 'SIGUSR1');
        return;
      } catch {
        /* gone: through its root, which reports the exit */
      }
    }
    s.proc.signal('SIGUSR1');
  }

  /** Kills the agent's standby (KILL, stop, escalation) and forgets it. */
  discard(id: number): void {
    const s = this.slots.get(id);
    if (!s) return;
    this.slots.delete(id);
    clearTimeout(s.timer);
    if (s.proc) this.kill(s.proc);
    s.proc = null;
    s.parked = 0;
    s.ready = false;
  }

  private kill(proc: AgentProcess): void {
    const gone = new Promise<void>((resolve) => proc.onExit(() => resolve()));
    this.exits.add(gone);
    void gone.then(() => this.exits.delete(gone));
    proc.signal('SIGKILL');
  }

  /** Kernel shutdown: every standby is killed; resolves once they are gone. */
  async close(): Promise<void> {
    this.closed = true;
    for (const id of [...this.slots.keys()]) this.discard(id);
    await Promise.allSettled([...this.spawns]);
    await Promise.all([...this.exits]);
  }
}
