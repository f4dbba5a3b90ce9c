/**
 * cgroup detection (v1 or v2, per controller) and per-agent cgroups.
 *
 * Layout: for every hierarchy we use, `<mount>/<kernel's own cgroup>/clove/<pid>.<n>/<name>_<id>`, so the
 * agents stay below whatever limits the kernel itself runs under, and two kernels (or two spawners of one
 * process) never share a directory.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CgroupError } from './errors.js';
import { sharesToWeight } from './policy.js';
import { startedAtMs } from './procfs.js';

export type Controller = 'memory' | 'cpu' | 'cpuacct' | 'pids' | 'freezer';

export interface Hierarchy {
  version: 1 | 2;
  /** Mount point, e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup (unified). */
  mount: string;
  /** v1: controllers co-mounted here; v2: controllers available at the root. */
  controllers: string[];
  /** The kernel's own cgroup, relative to the hierarchy root (from /proc/self/cgroup), e.g. "/" or "/a/b". */
  ownPath: string;
  /** File-system directory of the kernel's own cgroup. */
  ownDir: string;
}

export interface CgroupLayout {
  /** The cgroup2 hierarchy, when mounted (on hybrid hosts it may carry no controllers: still used for identity, kill and freeze). */
  v2?: Hierarchy;
  /** v1 hierarchies by mount point. */
  v1: Hierarchy[];
  /** Where each controller lives; absent = not available. */
  controllers: Partial<Record<Controller, Hierarchy>>;
  /** Description for reports: "v1", "v2" or "hybrid". */
  version: string;
}

interface MountEntry {
  root: string;
  mountPoint: string;
  fstype: string;
  superOptions: string[];
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    if (!right) continue;
    const l = left.split(' ');
    const r = right.split(' ');
    out.push({
      root: unescapeMount(l[3]),
      mountPoint: unescapeMount(l[4]),
      fstype: r[0],
      superOptions: (r[2] ?? '').split(','),
    });
  }
  return out;
}

/** /proc/<pid>/cgroup as [hierarchy-id, controllers, path] triples. */
export function parseProcCgroup(text: string): Array<{ id: string; controllers: string[]; path: string }> {
  const out: Array<{ id: string; controllers: string[]; path: string }> = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const a = line.indexOf(':');
    const b = line.indexOf(':', a + 1);
    if (a < 0 || b < 0) continue;
    const ctrl = line.slice(a + 1, b);
    out.push({ id: line.slice(0, a), controllers: ctrl ? ctrl.split(',') : [], path: line.slice(b + 1) });
  }
  return out;
}

function ownDirOf(mount: MountEntry, ownPath: string): string | undefined {
  // The mount may expose only a subtree (containers): ownPath must lie inside it.
  const root = mount.root === '/' ? '' : mount.root;
  if (root && ownPath !== root && !ownPath.startsWith(root + '/')) return undefined;
  return path.join(mount.mountPoint, ownPath.slice(root.length));
}

/** Detects, per controller, where it is mounted (v1) or enabled (v2). Pure: takes the files' contents. */
export function detectLayout(
  mountinfo: string,
  selfCgroup: string,
  readControllers: (dir: string) => string,
): CgroupLayout {
  const mounts = parseMountinfo(mountinfo);
  const self = parseProcCgroup(selfCgroup);
  const layout: CgroupLayout = { v1: [], controllers: {}, version: 'none' };
  const seen = new Set<string>();
  for (const m of mounts) {
    if (m.fstype === 'cgroup2' && !layout.v2) {
      const own = self.find((s) => s.id === '0');
      if (!own) continue;
      const ownDir = ownDirOf(m, own.path);
      if (!ownDir) continue;
      let controllers: string[] = [];
      try {
        controllers = readControllers(m.mountPoint).trim().split(/\s+/).filter(Boolean);
      } catch {
        /* unreadable: no controllers */
      }
      layout.v2 = { version: 2, mount: m.mountPoint, controllers, ownPath: own.path, ownDir };
    } else if (m.fstype === 'cgroup') {
      const ctrls = m.superOptions.filter((o) =>
        [
          'memory',
          'cpu',
          'cpuacct',
          'pids',
          'freezer',
          'cpuset',
          'blkio',
          'devices',
          'hugetlb',
          'net_cls',
          'net_prio',
          'perf_event',
          'rdma',
          'misc',
        ].includes(o),
      );
      if (ctrls.length === 0) continue; // name=systemd and friends
      const key = ctrls.slice().sort().join(',');
      if (seen.has(key)) continue; // the same hierarchy mounted twice
      const own = self.find((s) => s.controllers.slice().sort().join(',') === key);
      if (!own) continue;
      const ownDir = ownDirOf(m, own.path);
      if (!ownDir) continue;
      seen.add(key);
      layout.v1.push({ version: 1, mount: m.mountPoint, controllers: ctrls, ownPath: own.path, ownDir });
    }
  }
  for (const c of ['memory', 'cpu', 'cpuacct', 'pids', 'freezer'] as Controller[]) {
    const h1 = layout.v1.find((h) => h.controllers.includes(c));
    if (h1) layout.controllers[c] = h1;
    else if (layout.v2) {
      // v2 has no cpuacct (cpu.stat is a core file) and no freezer controller (cgroup.freeze is core).
      if (c === 'cpuacct' || c === 'freezer' || layout.v2.controllers.includes(c))
        layout.controllers[c] = layout.v2;
    }
  }
  const used = Object.values(layout.controllers);
  const v1used = used.some((h) => h.version === 1);
  const v2used = used.some((h) => h.version === 2) || !!layout.v2;
  layout.version = v1used && v2used ? 'hybrid' : v1used ? 'v1' : v2used ? 'v2' : 'none';
  return layout;
}

export function detectHostLayout(): CgroupLayout {
  return detectLayout(
    fs.readFileSync('/proc/self/mountinfo', 'utf8'),
    fs.readFileSync('/proc/self/cgroup', 'utf8'),
    (dir) => fs.readFileSync(path.join(dir, 'cgroup.controllers'), 'utf8'),
  );
}

// ---- small file helpers (cgroup files are tiny; sync I/O costs microseconds) ----

export function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

export function readNumber(file: string): number | undefined {
  const t = readText(file)?.trim();
  if (t === undefined || t === '') return undefined;
  if (t === 'max') return Infinity;
  const n = Number(t);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * The CPUs the kernel's own cgroup may use at most (its CPU quota over its period), the smallest along
 * its ancestors, or null when none of them has a quota (or there is no cpu controller). v1:
 * `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none); v2: `cpu.max` ("max 100000": none).
 */
export function cpuQuotaOf(layout: CgroupLayout): number | null {
  const h = layout.controllers.cpu;
  if (!h) return null;
  let least: number | null = null;
  for (let dir = h.ownDir; ; dir = path.dirname(dir)) {
    let cpus: number | undefined;
    if (h.version === 1) {
      const quota = readNumber(path.join(dir, 'cpu.cfs_quota_us'));
      const period = readNumber(path.join(dir, 'cpu.cfs_period_us'));
      if (quota !== undefined && quota > 0 && period) cpus = quota / period;
    } else {
      const [quota, period] = (readText(path.join(dir, 'cpu.max')) ?? '').trim().split(/\s+/);
      if (quota && quota !== 'max' && Number(period) > 0) cpus = Number(quota) / Number(period);
    }
    if (cpus !== undefined && Number.isFinite(cpus) && (least === null || cpus < least)) least = cpus;
    if (dir === h.mount || dir === path.dirname(dir)) return least;
  }
}

/** "key value" lines (memory.stat, cpu.stat, memory.events, pids.events, memory.oom_control). */
export function readKeyed(file: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of (readText(file) ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) {
      const n = v === 'max' ? Infinity : Number(v);
      if (Number.isFinite(n) || n === Infinity) out[k] = n;
    }
  }
  return out;
}

function write(file: string, value: string): void {
  try {
    fs.writeFileSync(file, value);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CgroupError(file, `write ${JSON.stringify(value)}: ${e.code ?? e.message}`, e.code ?? 'EIO', {
      cause: err,
    });
  }
}

function mkdir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CgroupError(dir, `mkdir: ${e.code ?? e.message}`, e.code ?? 'EIO', { cause: err });
  }
}

/** rmdir that tolerates "already gone"; returns false while the cgroup is still busy. */
function rmdir(dir: string): boolean {
  try {
    fs.rmdirSync(dir);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return true;
    return false;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when the kernel that made the root `dir` (named after its pid) is gone. */
function staleKernel(pid: number, dir: string): boolean {
  if (!pidAlive(pid)) return true;
  const started = startedAtMs(pid);
  let changed: number;
  try {
    changed = fs.statSync(dir).ctimeMs;
  } catch {
    return false;
  }
  // A process cannot have made a directory before it existed (a second of slack for clock granularity).
  return started !== undefined && started > changed + 1000;
}

/** Every cgroup directory of a subtree, deepest first. */
function subtree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: fs.Dirent[] = [];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
    out.push(d);
  };
  walk(dir);
  return out;
}

/** The cgroup directories directly below `dir`. */
function childDirs(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => path.join(dir, e.name));
  } catch {
    return [];
  }
}

function procsOf(dir: string): number[] {
  return (readText(path.join(dir, 'cgroup.procs')) ?? '').split('\n').filter(Boolean).map(Number);
}

/** Sleeps without returning to the event loop (start-up only: a stale root is emptied before anything else runs). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Thaws every frozen cgroup of a subtree (v1 freezer.state, v2 cgroup.freeze): a frozen task never gets its SIGKILL. */
function thawSubtree(dir: string): void {
  for (const d of subtree(dir)) {
    for (const [file, value] of [
      ['freezer.state', 'THAWED'],
      ['cgroup.freeze', '0'],
    ]) {
      const f = path.join(d, file);
      if (!fs.existsSync(f)) continue;
      try {
        fs.writeFileSync(f, value);
      } catch {
        /* best effort */
      }
    }
  }
}

/**
 * SIGKILLs every process left in a cgroup subtree and waits (up to `timeoutMs`) until it is empty:
 * cgroup.kill on v2, else SIGKILL to each pid of every cgroup.procs, repeated while processes remain
 * (they may fork meanwhile). Frozen cgroups of the subtree are thawed first. Returns the pids found.
 */
export function killSubtree(dir: string, timeoutMs = 3000): number[] {
  const found = new Set<number>();
  const deadline = Date.now() + timeoutMs;
  for (let round = 0; ; round++) {
    const dirs = subtree(dir);
    const pids = dirs.flatMap(procsOf);
    if (pids.length === 0) return [...found];
    for (const p of pids) found.add(p);
    if (Date.now() > deadline) return [...found];
    if (round === 0) thawSubtree(dir);
    if (round % 20 === 0) {
      const kill = path.join(dir, 'cgroup.kill');
      let killed = false;
      if (fs.existsSync(kill)) {
        try {
          fs.writeFileSync(kill, '1');
          killed = true;
        } catch {
          /* fall back to signals */
        }
      }
      if (!killed) {
        for (const p of pids) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
    }
    sleepSync(10);
  }
}

/** Removes a cgroup subtree bottom-up (cgroup dirs hold only virtual files, so rmdir works on non-empty-looking dirs). */
function removeTree(dir: string): void {
  let entries: fs.Dirent[] = [];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) if (e.isDirectory()) removeTree(path.join(dir, e.name));
  const kill = path.join(dir, 'cgroup.kill');
  if (fs.existsSync(kill)) {
    try {
      fs.writeFileSync(kill, '1');
    } catch {
      /* best effort */
    }
  }
  rmdir(dir);
}

/**
 * The CPU weight of the swarm's two shared directories (`clove` and a kernel's root below it): one default
 * weight (v1 `cpu.shares` 1024, v2 `cpu.weight` 100) per CPU the kernel may run on. Why: the cpu
 * controller splits a group's weight among the CPUs its tasks run on, so with the default weight a swarm
 * busy on n CPUs weighed 1/n of one process on each, against the kernel's reactor thread at full weight
 * (woken by every message). Measured on 2 CPUs (bench/messaging,
 * 4→4 through the fast path, two A/B pairs): unanswered round trips' p50 130–152 µs with the default weight,
 * 113–125 µs with this one, rates 2–8 % lower (reports/fastpath.md, "CPU weight"). As a whole the swarm
 * still weighs one process per CPU whatever its number of agents: the kernel and the host's other
 * processes keep their share against any swarm. Agents share it by their `cpu_shares`.
 */
export function swarmWeight(cpus: number): { shares: number; weight: number } {
  const shares = Math.min(262_144, 1024 * Math.max(1, Math.floor(cpus)));
  return { shares, weight: sharesToWeight(shares) };
}

export interface AgentLimits {
  memory: number;
  maxPids: number;
  cpuQuota: number;
  cpuPeriod: number;
  cpuShares: number;
  cpuWeight: number;
}

/** What actually got applied to one agent's cgroups. */
export interface AppliedLimits {
  memory: boolean;
  cpu: boolean;
  pids: boolean;
}

/** One agent's cgroup directories, one per hierarchy in use. */
export class AgentCgroup {
  /** Path relative to each hierarchy root, e.g. /clove/123.0/worker_4 (same tail in every hierarchy). */
  constructor(
    readonly layout: CgroupLayout,
    readonly dirs: Map<Hierarchy, string>,
    readonly relPaths: Map<Hierarchy, string>,
    readonly applied: AppliedLimits,
  ) {}

  dir(c: Controller): string | undefined {
    const h = this.layout.controllers[c];
    return h ? this.dirs.get(h) : undefined;
  }

  /** The v2 directory the child is born in (CLONE_INTO_CGROUP). */
  get v2Dir(): string | undefined {
    return this.layout.v2 ? this.dirs.get(this.layout.v2) : undefined;
  }

  /** v1 cgroup.procs files the child joins before exec. */
  get v1Procs(): string[] {
    const out: string[] = [];
    for (const [h, d] of this.dirs) if (h.version === 1) out.push(path.join(d, 'tasks'));
    return out;
  }

  /** Counter of OOM kills inside this cgroup (v1 memory.oom_control oom_kill, v2 memory.events oom_kill). */
  oomKills(): number {
    const h = this.layout.controllers.memory;
    const d = this.dir('memory');
    if (!h || !d) return 0;
    if (h.version === 1) return readKeyed(path.join(d, 'memory.oom_control')).oom_kill ?? 0;
    return readKeyed(path.join(d, 'memory.events')).oom_kill ?? 0;
  }

  /** How often fork failed at pids.max (pids.events `max`, v1 and v2). */
  pidsMaxEvents(): number {
    const d = this.dir('pids');
    return d ? (readKeyed(path.join(d, 'pids.events')).max ?? 0) : 0;
  }

  /** Pids of every process in the cgroup (any hierarchy that has one). */
  procs(): number[] {
    for (const d of this.dirs.values()) {
      const t = readText(path.join(d, 'cgroup.procs'));
      if (t !== undefined) return t.split('\n').filter(Boolean).map(Number);
    }
    return [];
  }

  /** Freezes (true) or thaws (false) the whole agent. False when no freezer is available. */
  freeze(frozen: boolean): boolean {
    const v2 = this.v2Dir;
    if (v2 && fs.existsSync(path.join(v2, 'cgroup.freeze'))) {
      write(path.join(v2, 'cgroup.freeze'), frozen ? '1' : '0');
      return true;
    }
    const fz = this.layout.v1.find((h) => h.controllers.includes('freezer'));
    const d = fz ? this.dirs.get(fz) : undefined;
    if (d) {
      write(path.join(d, 'freezer.state'), frozen ? 'FROZEN' : 'THAWED');
      return true;
    }
    return false;
  }

  /** SIGKILLs every process of the cgroup: cgroup.kill on v2, else each pid of cgroup.procs. */
  killAll(): void {
    const v2 = this.v2Dir;
    if (v2 && fs.existsSync(path.join(v2, 'cgroup.kill'))) {
      try {
        fs.writeFileSync(path.join(v2, 'cgroup.kill'), '1');
        return;
      } catch {
        /* fall through */
      }
    }
    for (const pid of this.procs()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }

  /** Removes the directories; false while some is still busy (caller retries). */
  remove(): boolean {
    let ok = true;
    for (const d of this.dirs.values()) ok = rmdir(d) && ok;
    return ok;
  }
}

/**
 * The per-spawner cgroup root: creates it (and enables v2 controllers down to it), creates and removes
 * agent cgroups, and maps pids back to agents through /proc/<pid>/cgroup.
 */
export class CgroupRoot {
  /** <hierarchy> -> directory of this spawner's root. */
  readonly roots = new Map<Hierarchy, string>();
  /** Relative (to the hierarchy root) path of this spawner's root. */
  readonly relRoots = new Map<Hierarchy, string>();
  /** Why some controller is missing, for isolation reports. */
  readonly problems: string[] = [];
  /** Processes of dead kernels' agents found (and SIGKILLed) in their stale roots at init(), for the log. */
  readonly leftovers: { dir: string; pids: number[] }[] = [];

  constructor(
    readonly layout: CgroupLayout,
    readonly instance: string,
    /**
     * The data dir's tag (8 hex digits) of a kernel: its root is named `<instance>.<tag>`, and only a
     * kernel of the same data dir treats such a root as its own (the others leave a dead kernel's
     * leftovers alone: they wait for their own kernel). Untagged roots are anybody's.
     */
    readonly tag?: string,
    /** CPUs the kernel may run on, for the swarm's CPU weight (swarmWeight). */
    readonly cpus: number = os.availableParallelism(),
  ) {}

  /** The root's directory name in every hierarchy. */
  get rootName(): string {
    return this.tag ? `${this.instance}.${this.tag}` : this.instance;
  }

  /** Hierarchies this spawner uses: every v1 one with a controller we want, plus v2. */
  hierarchies(): Hierarchy[] {
    const set = new Set<Hierarchy>(Object.values(this.layout.controllers));
    if (this.layout.v2) set.add(this.layout.v2);
    return [...set];
  }

  /**
   * Leaves of dead kernels' roots kept for re-adoption (docs/restart.md), by the pid init() was asked to
   * keep: that agent's cgroup in each hierarchy, handed out once by `adopt`.
   */
  private readonly kept = new Map<number, { dirs: Map<Hierarchy, string>; rels: Map<Hierarchy, string> }>();
  /** Stale roots left in place because they hold kept leaves: removed once empty (`pruneOld`, close). */
  private readonly oldRoots = new Set<string>();

  /**
   * Creates the roots. Hierarchies that cannot be written are dropped (and reported), never fatal.
   * `keep`: pids of agents a dead kernel left that this kernel re-adopts — their leaves of stale roots
   * are not emptied (see cleanStale).
   */
  init(keep: ReadonlySet<number> = new Set()): void {
    this.cleanStale(keep);
    for (const h of this.hierarchies()) {
      const base = path.join(h.ownDir, 'clove');
      const root = path.join(base, this.rootName);
      try {
        if (h.version === 2) this.enableV2(h, [h.ownDir, base, root]);
        else mkdir(root);
        if (h.version === 1 && h.controllers.includes('cpuset')) {
          // v1 cpuset children start with empty cpus/mems: copy the parent's.
          for (const d of [base, root]) {
            for (const f of ['cpuset.cpus', 'cpuset.mems'])
              write(path.join(d, f), readText(path.join(path.dirname(d), f))?.trim() ?? '');
          }
        }
        if (h.controllers.includes('cpu')) this.weigh(h, [base, root]);
        this.roots.set(h, root);
        this.relRoots.set(h, path.posix.join(h.ownPath, 'clove', this.rootName));
      } catch (err) {
        this.problems.push(`${h.mount}: ${(err as Error).message}`);
        for (const [c, hh] of Object.entries(this.layout.controllers))
          if (hh === h) delete this.layout.controllers[c as Controller];
        if (this.layout.v2 === h) delete this.layout.v2;
      }
    }
  }

  /**
   * Writes the swarm's CPU weight (swarmWeight) on `clove` and on this kernel's root. A weight that cannot
   * be written (a delegated hierarchy that keeps it) is reported, not fatal: the agents' limits still apply.
   */
  private weigh(h: Hierarchy, dirs: string[]): void {
    const w = swarmWeight(this.cpus);
    const [file, value] = h.version === 1 ? ['cpu.shares', w.shares] : ['cpu.weight', w.weight];
    for (const d of dirs) {
      try {
        if (readNumber(path.join(d, file)) !== value) write(path.join(d, file), String(value));
      } catch (err) {
        this.problems.push(`swarm CPU weight not set: ${path.join(d, file)}: ${(err as Error).message}`);
      }
    }
  }

  /** v2: a controller is usable in a child only if every ancestor enabled it in cgroup.subtree_control. */
  private enableV2(h: Hierarchy, chain: string[]): void {
    const want = ['memory', 'cpu', 'pids'].filter((c) => h.controllers.includes(c));
    for (let i = 0; i < chain.length; i++) {
      const d = chain[i];
      if (i > 0) mkdir(d);
      if (want.length === 0) continue;
      const ctl = path.join(d, 'cgroup.subtree_control');
      const have = (readText(ctl) ?? '').split(/\s+/);
      const missing = want.filter((c) => !have.includes(c));
      if (missing.length === 0) continue;
      try {
        write(ctl, missing.map((c) => `+${c}`).join(' '));
      } catch (err) {
        if (i === 0 && (err as CgroupError).code === 'EBUSY') {
          // "No internal processes": our own cgroup holds processes (us). Move ourselves into a leaf, as a
          // delegated service would, then retry once.
          const leaf = path.join(d, 'clove-kernel');
          mkdir(leaf);
          write(path.join(leaf, 'cgroup.procs'), String(process.pid));
          write(ctl, missing.map((c) => `+${c}`).join(' '));
        } else {
          throw err;
        }
      }
    }
  }

  /**
   * Roots left by kernels that died are emptied and removed at start-up: every process still in one (an
   * unsandboxed or plain-mode agent has no clove-init to die with its kernel) is SIGKILLed first, so that
   * no agent of a dead kernel runs beside the agents a new kernel starts again. A root is stale when its
   * kernel's pid is gone, when that pid now names a process that started after the root was last
   * changed (the pid was reused), or when it carries this very instance's name before this instance
   * made it (a kernel that had the same pid, e.g. pid 1 of a container). A tagged root (`tag`) of
   * another data dir is not ours: it is removed only once empty, its processes are never signalled.
   */
  private cleanStale(keep: ReadonlySet<number>): void {
    const stale: { dir: string; h: Hierarchy }[] = [];
    // v2 first: cgroup.kill empties a whole subtree at once; the v1 hierarchies then hold nothing more.
    for (const h of this.hierarchies().sort((x, y) => y.version - x.version)) {
      const base = path.join(h.ownDir, 'clove');
      let names: string[] = [];
      try {
        names = fs.readdirSync(base);
      } catch {
        continue;
      }
      for (const n of names) {
        const m = /^(\d+)\.\d+(?:\.([0-9a-f]{8}))?$/.exec(n);
        const dir = path.join(base, n);
        if (!m || !(n === this.rootName || staleKernel(Number(m[1]), dir))) continue;
        if (m[2] === undefined || m[2] === this.tag) stale.push({ dir, h });
        else if (subtree(dir).flatMap(procsOf).length === 0) removeTree(dir);
      }
    }
    // Leaves holding a kept pid stay as they are (limits, charges, processes): the agent is re-adopted.
    const keptLeaves = new Set<string>();
    if (keep.size > 0) {
      for (const { dir, h } of stale) {
        for (const leaf of childDirs(dir)) {
          const pids = subtree(leaf).flatMap(procsOf);
          const owner = pids.find((p) => keep.has(p));
          if (owner === undefined) continue;
          keptLeaves.add(leaf);
          const k = this.kept.get(owner) ?? { dirs: new Map(), rels: new Map() };
          k.dirs.set(h, leaf);
          k.rels.set(h, path.posix.join(h.ownPath, 'clove', path.basename(dir), path.basename(leaf)));
          this.kept.set(owner, k);
        }
      }
    }
    // What else is in a stale root goes: whole roots when nothing in them is kept, else leaf by leaf.
    const doomed: string[] = [];
    for (const { dir } of stale) {
      const leaves = childDirs(dir);
      if (!leaves.some((l) => keptLeaves.has(l))) doomed.push(dir);
      else {
        this.oldRoots.add(dir);
        doomed.push(...leaves.filter((l) => !keptLeaves.has(l)));
        for (const p of procsOf(dir)) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
    }
    // A task frozen by a v1 freezer in one hierarchy gets no SIGKILL sent through another: thaw them all first.
    for (const dir of doomed) thawSubtree(dir);
    const seen = new Set<number>();
    for (const dir of doomed) {
      const pids = killSubtree(dir).filter((p) => !seen.has(p));
      for (const p of pids) seen.add(p);
      if (pids.length) this.leftovers.push({ dir, pids });
    }
    for (const dir of doomed) removeTree(dir);
  }

  /**
   * The cgroup a dead kernel made for the agent whose pid init() kept, as this kernel's AgentCgroup (its
   * limits stay as they were written); undefined when none was kept for it. Handed out once.
   */
  adopt(pid: number): AgentCgroup | undefined {
    const k = this.kept.get(pid);
    if (!k) return undefined;
    this.kept.delete(pid);
    const c = this.layout.controllers;
    const has = (ctl: Controller) => c[ctl] !== undefined && k.dirs.has(c[ctl]!);
    return new AgentCgroup(this.layout, k.dirs, k.rels, {
      memory: has('memory'),
      cpu: has('cpu'),
      pids: has('pids'),
    });
  }

  /** Removes stale roots kept for adopted agents once their last leaf is gone (rmdir fails otherwise). */
  pruneOld(): void {
    for (const dir of this.oldRoots) if (childDirs(dir).length === 0 && rmdir(dir)) this.oldRoots.delete(dir);
  }

  /** Creates an agent's cgroups and writes its limits. */
  create(leaf: string, limits: AgentLimits): AgentCgroup {
    const dirs = new Map<Hierarchy, string>();
    const rels = new Map<Hierarchy, string>();
    const applied: AppliedLimits = { memory: false, cpu: false, pids: false };
    try {
      for (const [h, root] of this.roots) {
        const d = path.join(root, leaf);
        try {
          fs.mkdirSync(d);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          // A leftover of a previous incarnation with the same name and id: reuse only if empty.
          if ((readText(path.join(d, 'cgroup.procs')) ?? '').trim() !== '')
            throw new CgroupError(d, 'cgroup exists and is in use', 'EBUSY');
        }
        dirs.set(h, d);
        rels.set(h, path.posix.join(this.relRoots.get(h)!, leaf));
      }
      const cg = new AgentCgroup(this.layout, dirs, rels, applied);
      const c = this.layout.controllers;
      const mem = cg.dir('memory');
      if (mem && c.memory) {
        if (c.memory.version === 1) {
          write(path.join(mem, 'memory.limit_in_bytes'), String(limits.memory));
          // With swap accounting, memsw = memory means "no swap at all".
          if (fs.existsSync(path.join(mem, 'memory.memsw.limit_in_bytes')))
            write(path.join(mem, 'memory.memsw.limit_in_bytes'), String(limits.memory));
          else write(path.join(mem, 'memory.swappiness'), '0');
        } else {
          write(path.join(mem, 'memory.max'), String(limits.memory));
          if (fs.existsSync(path.join(mem, 'memory.swap.max'))) write(path.join(mem, 'memory.swap.max'), '0');
          if (fs.existsSync(path.join(mem, 'memory.oom.group')))
            write(path.join(mem, 'memory.oom.group'), '1');
        }
        applied.memory = true;
      }
      const cpu = cg.dir('cpu');
      if (cpu && c.cpu) {
        if (c.cpu.version === 1) {
          // Each write of the period or the quota walks every task group of the host (O(cgroups)): the
          // period is written only when it is not already the one asked for (a new cgroup's is 100 ms).
          if (readNumber(path.join(cpu, 'cpu.cfs_period_us')) !== limits.cpuPeriod)
            write(path.join(cpu, 'cpu.cfs_period_us'), String(limits.cpuPeriod));
          write(path.join(cpu, 'cpu.cfs_quota_us'), String(limits.cpuQuota));
          write(path.join(cpu, 'cpu.shares'), String(limits.cpuShares));
        } else {
          write(path.join(cpu, 'cpu.max'), `${limits.cpuQuota} ${limits.cpuPeriod}`);
          write(path.join(cpu, 'cpu.weight'), String(limits.cpuWeight));
        }
        applied.cpu = true;
      }
      const pids = cg.dir('pids');
      if (pids && c.pids) {
        write(path.join(pids, 'pids.max'), String(limits.maxPids));
        applied.pids = true;
      }
      return cg;
    } catch (err) {
      for (const d of dirs.values()) rmdir(d);
      throw err;
    }
  }

  /** The agent-relative cgroup path of a pid in the identity hierarchy (v2 if present, else the first v1 one). */
  identityPathOf(pid: number): string | undefined {
    const text = readText(`/proc/${pid}/cgroup`);
    if (!text) return undefined;
    const lines = parseProcCgroup(text);
    const h = this.identityHierarchy();
    if (!h) return undefined;
    const key = h.controllers.slice().sort().join(',');
    const line =
      h.version === 2
        ? lines.find((l) => l.id === '0')
        : lines.find((l) => l.controllers.slice().sort().join(',') === key);
    return line?.path;
  }

  identityHierarchy(): Hierarchy | undefined {
    if (this.layout.v2 && this.roots.has(this.layout.v2)) return this.layout.v2;
    return [...this.roots.keys()][0];
  }

  /** Removes this spawner's roots (agents must be gone) and the shared `clove` dir when it is empty. */
  close(): void {
    this.pruneOld();
    for (const root of this.roots.values()) {
      removeTree(root);
      rmdir(path.dirname(root));
    }
  }
}
