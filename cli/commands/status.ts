/**
 * `clove ps` (agents with their service, CPU, memory and quota use) and `clove status` (the kernel, its
 * agents by state, the projects found in their labels).
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import type { AgentInfo, AgentMetrics, SpareInfo, StandbyInfo } from '../../protocol/generated.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { EXIT, CliError, fmtBytes, fmtUptime, labelsOf, table, tryConnect, withClient } from '../lib.js';
import type { Globals } from './compose.js';

/** One `ps --json` entry (the table shows the same fields). */
export interface PsEntry {
  id: number;
  name: string;
  /** The cluster node it runs on (null: a kernel without --cluster). */
  node: string | null;
  project: string | null;
  service: string | null;
  replica: number | null;
  state: string;
  pid: number;
  restarts: number;
  uptime_ms: number;
  cpu_percent: number | null;
  memory_bytes: number | null;
  restart_policy: string;
  labels: Record<string, string>;
  /** GET_QUOTA's reply when the kernel has quotas, else null */
  quotas: Record<string, unknown> | null;
  /** LIST's `standby`: the agent's warm standby (a parked interpreter), else null */
  standby: StandbyInfo | null;
  /** LIST's `spare`: the agent's spare sandbox (made in advance for its next restart), else null */
  spare: SpareInfo | null;
}

/**
 * The WARM column: what the agent's next restart starts from. `standby` or `spare` when one is parked and
 * ready, `… (making)` while it is being made, `-` for a cold start.
 */
export function fmtWarm(e: Pick<PsEntry, 'standby' | 'spare'>): string {
  if (e.standby?.ready) return 'standby';
  if (e.spare?.ready) return 'spare';
  if (e.standby && !e.standby.note) return 'standby (making)';
  if (e.spare) return 'spare (making)';
  return '-';
}

/**
 * Every agent's quotas (GET_QUOTA with `all`), by agent id; empty when the kernel cannot tell (an
 * older kernel without the quotas family: `ps` still lists its agents).
 */
async function quotasByAgent(c: CloveClient): Promise<Map<number, Record<string, unknown>>> {
  try {
    const r = (await c.getQuota({ all: true })) as {
      agents?: { agent_id: number; quotas: Record<string, unknown> }[];
    };
    return new Map((r.agents ?? []).map((a) => [a.agent_id, a.quotas]));
  } catch {
    return new Map();
  }
}

/** A quota's amount in its unit (docs/protocol.md §4b): bytes, milliseconds, or a count. */
export function fmtQuotaAmount(name: string, n: number): string {
  if (name === 'memory' || name === 'network_bytes') return fmtBytes(n);
  if (name === 'cpu_time' || name === 'wall_time') return n < 1000 ? `${n}ms` : fmtUptime(n);
  return String(n);
}

/** "memory 11M/96M llm_calls 3/10" for every quota that has a limit; `!` marks one reached. */
export function fmtQuotas(q: Record<string, unknown> | null): string {
  if (!q) return '-';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(q)) {
    const x = v as { limit?: number; used?: number; exceeded?: boolean };
    if (typeof x?.limit === 'number')
      parts.push(
        `${k} ${fmtQuotaAmount(k, x.used ?? 0)}/${fmtQuotaAmount(k, x.limit)}${x.exceeded ? '!' : ''}`,
      );
  }
  return parts.join(' ') || '-';
}

/**
 * `ps` rows. `allNodes`: every node's agents of a clustered kernel (LIST `all_nodes`); metrics and quotas
 * are this node's only, so other nodes' agents show none.
 */
export async function psEntries(
  c: CloveClient,
  all: boolean,
  services: string[],
  allNodes = false,
): Promise<PsEntry[]> {
  const agents = (await c.list(allNodes ? { all_nodes: true } : {})).filter(
    (a) =>
      (all || (a.state !== 'STOPPED' && a.state !== 'FAILED')) &&
      (!services.length ||
        services.includes(labelsOf(a)['clove.service'] ?? '') ||
        services.includes(a.name)),
  );
  let metrics = new Map<number, AgentMetrics>();
  try {
    metrics = new Map((await c.allAgentMetrics()).agents.map((m) => [m.agent_id, m]));
  } catch {
    // Metrics are extra: ps still lists agents without them.
  }
  const quotas = await quotasByAgent(c);
  const out: PsEntry[] = [];
  for (const a of agents.sort((x, y) => x.id - y.id)) {
    const l = labelsOf(a);
    // Ids are unique cluster-wide: another node's agent has no metrics or quotas here.
    const m = metrics.get(a.id);
    out.push({
      id: a.id,
      name: a.name,
      node: a.node ?? null,
      project: l['clove.project'] ?? null,
      service: l['clove.service'] ?? null,
      replica: l['clove.replica'] ? Number(l['clove.replica']) : null,
      state: a.state,
      pid: a.pid,
      restarts: a.restarts,
      uptime_ms: a.uptime_ms,
      cpu_percent: m?.process?.cpu.percent ?? null,
      memory_bytes: m?.cgroup?.memory?.current ?? m?.process?.memory.rss ?? null,
      restart_policy: a.restart_policy,
      labels: l,
      quotas: quotas.get(a.id) ?? null,
      standby: a.standby ?? null,
      spare: a.spare ?? null,
    });
  }
  return out;
}

/** The pid of the process listening on a Unix socket path (/proc/net/unix → /proc/<pid>/fd), or null. */
export function socketOwner(socket: string): number | null {
  let inode: string | undefined;
  try {
    for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[7] === socket && f[3] === '00010000') inode = f[6];
    }
  } catch {
    return null;
  }
  if (!inode) return null;
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${d}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (fs.readlinkSync(`/proc/${d}/fd/${fd}`) === `socket:[${inode}]`) return Number(d);
      } catch {
        // closed meanwhile
      }
    }
  }
  return null;
}

/** How long process `pid` has run, from /proc (ms), or null. */
function processUptimeMs(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const uptimeS = Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
    return Math.max(0, Math.round((uptimeS - startTicks / 100) * 1000));
  } catch {
    return null;
  }
}

interface Status {
  reachable: boolean;
  socket: string;
  pid: number | null;
  version: string | null;
  data_dir: string | null;
  uptime_ms: number | null;
  sandbox: Record<string, unknown> | null;
  agents: { total: number; by_state: Record<string, number> };
  projects: { name: string; services: { name: string; replicas: number; running: number }[] }[];
}

async function status(socket: string): Promise<Status> {
  const c = await tryConnect(socket);
  if (!c)
    return {
      reachable: false,
      socket,
      pid: null,
      version: null,
      data_dir: null,
      uptime_ms: null,
      sandbox: null,
      agents: { total: 0, by_state: {} },
      projects: [],
    };
  try {
    const hello = await c.hello();
    const agents: AgentInfo[] = await c.list();
    const byState: Record<string, number> = {};
    for (const a of agents) byState[a.state] = (byState[a.state] ?? 0) + 1;
    const projects = new Map<string, Map<string, { replicas: number; running: number }>>();
    for (const a of agents) {
      const l = labelsOf(a);
      const p = l['clove.project'];
      if (!p) continue;
      const svcs = projects.get(p) ?? new Map();
      projects.set(p, svcs);
      const s = svcs.get(l['clove.service'] ?? '') ?? { replicas: 0, running: 0 };
      svcs.set(l['clove.service'] ?? '', s);
      s.replicas++;
      if (a.state === 'RUNNING') s.running++;
    }
    const pid = socketOwner(socket);
    return {
      reachable: true,
      socket,
      pid,
      version: hello.kernel_version,
      data_dir: hello.data_dir ?? null,
      uptime_ms: pid ? processUptimeMs(pid) : null,
      sandbox: hello.sandbox,
      agents: { total: agents.length, by_state: byState },
      projects: [...projects].map(([name, svcs]) => ({
        name,
        services: [...svcs].map(([s, v]) => ({ name: s, ...v })),
      })),
    };
  } finally {
    c.close();
  }
}

export function registerStatus(p: Command, g: Globals): void {
  p.command('ps')
    .description(
      'list agents: service, state, pid, restarts, uptime, CPU, memory, quota use, what a restart starts from',
    )
    .argument('[services...]', 'only agents of these services (or with these names)')
    .option('-a, --all', 'also agents that stopped or failed for good')
    .option('--json', 'print JSON')
    .action(async (services: string[], o) => {
      const rows = await withClient(g.socket(), (c) => psEntries(c, !!o.all, services, true));
      if (o.json) return console.log(JSON.stringify(rows));
      // A clustered kernel's agents name their node: the NODE column appears then.
      const nodes = rows.some((r) => r.node !== null);
      const t: (string | number)[][] = [
        [
          'ID',
          'NAME',
          ...(nodes ? ['NODE'] : []),
          'SERVICE',
          'STATE',
          'PID',
          'RESTARTS',
          'UPTIME',
          'CPU',
          'MEM',
          'QUOTAS',
          'WARM',
        ],
      ];
      for (const r of rows)
        t.push([
          r.id,
          r.name,
          ...(nodes ? [r.node ?? '-'] : []),
          r.service ? `${r.project}/${r.service}` : '-',
          r.state,
          r.pid || '-',
          r.restarts,
          fmtUptime(r.uptime_ms),
          r.cpu_percent === null ? '-' : `${r.cpu_percent.toFixed(1)}%`,
          fmtBytes(r.memory_bytes),
          fmtQuotas(r.quotas),
          fmtWarm(r),
        ]);
      console.log(table(t));
    });

  p.command('nodes')
    .description('list the nodes of the cluster: address, version, agents, free memory, idle CPU, uptime')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const r = await withClient(g.socket(), (c) => c.clusterNodes());
      if (o.json) return console.log(JSON.stringify(r.nodes));
      if (!r.clustered) return console.log('this kernel is not in a cluster (start it with --cluster)');
      const t: (string | number)[][] = [
        ['NODE', 'STATUS', 'ADVERTISE', 'VERSION', 'AGENTS', 'FREE MEM', 'IDLE CPU', 'UPTIME', 'SEEN'],
      ];
      const now = Date.now();
      for (const n of r.nodes)
        t.push([
          n.self ? `${n.node} *` : n.node,
          n.alive ? 'alive' : 'lost',
          n.advertise,
          n.version,
          n.agents,
          fmtBytes(n.free_memory),
          `${n.idle_cpu.toFixed(1)}/${n.cores}`,
          n.alive ? fmtUptime(now - n.started_at) : '-',
          `${fmtUptime(Math.max(0, now - n.updated_at))} ago`,
        ]);
      console.log(table(t));
    });

  p.command('status')
    .description('is the kernel up; its pid, version, uptime, sandbox, agents by state, projects')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const s = await status(g.socket());
      if (o.json) console.log(JSON.stringify(s));
      else if (!s.reachable) console.log(`kernel: not reachable on ${s.socket}`);
      else {
        const sb = s.sandbox ?? {};
        console.log(
          [
            `kernel:   up, pid ${s.pid ?? '?'}, version ${s.version}, uptime ${fmtUptime(s.uptime_ms ?? 0)}`,
            `socket:   ${s.socket}`,
            `data dir: ${s.data_dir ?? '?'}`,
            `sandbox:  ${String(sb.mode ?? sb.isolation ?? JSON.stringify(sb))}`,
            `agents:   ${s.agents.total}${
              s.agents.total
                ? ` (${Object.entries(s.agents.by_state)
                    .map(([k, v]) => `${v} ${k}`)
                    .join(', ')})`
                : ''
            }`,
            ...s.projects.flatMap((p) => [
              `project ${p.name}:`,
              ...p.services.map((v) => `  ${v.name}: ${v.running}/${v.replicas} running`),
            ]),
          ].join('\n'),
        );
      }
      if (!s.reachable) throw new CliError('', EXIT.UNREACHABLE);
    });
}
