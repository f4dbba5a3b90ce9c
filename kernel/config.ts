/**
 * Kernel options with their defaults, in one place. The CLI and the harness build these; nothing else
 * invents a default.
 */
import os from 'node:os';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DEFAULT_MAX_PAYLOAD, DEFAULT_SOCKET, SOCKET_ENV } from '../protocol/index.js';

import { DEFAULT_BUDGETS, type Budgets } from './core/budgets.js';
import { KernelStartError } from './core/errors.js';
import type { SandboxMode } from './sandbox/runtime.js';
import type { ClusterOptions } from './cluster/types.js';

export type { SandboxMode };

export interface KernelOptions {
  /** Operator socket (mode 0600). */
  socketPath: string;
  /** State store, agent logs and the agent socket live here. */
  dataDir: string;
  maxPayload: number;
  /** Messages a mailbox holds before SEND fails with mailbox_full (the default `mailbox_messages` budget). */
  mailboxSize: number;
  /** Events a subscriber's queue holds before the oldest are dropped and counted (`event_queue_events`). */
  eventQueueSize: number;
  /** Default per-agent budgets (docs/protocol.md "Budgets"); mailboxSize and eventQueueSize win over theirs. */
  budgets: Partial<Budgets>;
  /** Bytes of messages and events queued in the whole kernel; beyond it SEND and BROADCAST fail (quota_exceeded). */
  maxQueuedBytes: number;
  /** The deepest nesting a JSON request may have (invalid_request beyond). */
  maxDepth: number;
  /** The most bytes of messages or events one RECV or POLL_EVENTS reply carries (at least one item). */
  maxReplyBytes: number;
  /** File descriptors kept for operators: agents and clients are refused once fewer are left. */
  operatorReserveFds: number;
  /** Names only an operator's SPAWN may take (besides the names of the agents operators spawned). */
  reservedNames: string[];
  logMaxBytes: number;
  logKeep: number;
  /** How often a growing log's size is checked for rotation (a quiet log's less often, down to 16× this). */
  logCheckIntervalMs: number;
  /** Grace period between SIGTERM and SIGKILL when the kernel stops its agents. */
  shutdownGraceMs: number;
  /** `auto`: the native sandbox when it works here, else plain processes with a warning. */
  sandbox: SandboxMode;
  /** `full` also survives power loss (fsync per write); `normal` survives kernel crashes. */
  durability: 'normal' | 'full';
  /**
   * Agents outlive the kernel process (docs/restart.md): a kernel that is SIGKILLed, crashes or hands
   * over (SIGHUP, `clove kernel --upgrade`) leaves them running, and the next kernel on the same data dir
   * re-adopts them. false (`--agents-die-with-kernel`): sandboxed agents are SIGKILLed with it
   * (PR_SET_PDEATHSIG), and the next kernel starts them again.
   */
  outliveKernel: boolean;
  /**
   * Each sandboxed agent that may be restarted keeps its next sandbox made in advance, so that a restart
   * starts the program at once (docs/supervision.md "Spare sandbox"); false (`--no-spare-sandboxes`):
   * a restart spawns a new sandbox, and no parked clove-init or cgroup leaf is kept per agent.
   */
  spareSandboxes: boolean;
  /**
   * `process` (default): messages queued for agents are written through to mail.db and survive a kernel
   * crash (docs/restart.md); `off`: held in memory only. The fast path's mailboxes are never written.
   */
  mailDurability: 'process' | 'off';
  /** Extra directories put on agents' PYTHONPATH (the Python SDK's is always there). */
  pythonPath: string[];
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /**
   * As root, agent N runs as uid/gid `agentUidBase + N`, so that no agent can read another's files.
   * 0: every agent runs as the sandbox's single uid (65534).
   */
  agentUidBase: number;
  /**
   * The native fast path (docs/fastpath.md): connections are owned by the addon's reactor thread.
   * Default: on when the environment has CLOVE_FAST_PATH=1.
   */
  fastPath: boolean;
  /**
   * With the fast path: the most microseconds its reactor polls for work before it sleeps, backing off
   * when polls find nothing and never while the machine has more runnable tasks than CPUs
   * (docs/fastpath.md, "Polling"). 0: it never polls; at most 1000. `auto` (default, or
   * CLOVE_FAST_PATH_POLL_US): 50, or 0 where the kernel has no CPU to spare (resolveFastPathPollUs).
   */
  fastPathPollUs: number | 'auto';
  /** Member of a cluster (docs/cluster.md): null for a kernel on its own, which needs no etcd or NATS. */
  cluster: ClusterOptions | null;
  /**
   * Dial this relay at start (docs/relay.md): `clove kernel --relay URL --machine-id ID
   * --relay-token-file F`; null: no tunnel until an operator's TUNNEL_CONNECT.
   */
  relay: RelayOptions | null;
  /** `--http HOST:PORT` (docs/http.md): the HTTP API, dashboard and /metrics; null (default) is off. */
  http: { host: string; port: number } | null;
}

/** The relay a kernel dials at start. */
export interface RelayOptions {
  url: string;
  machineId: string;
  /** A file holding the machine token (read at start; keep it 0600). */
  tokenFile: string;
}

/** The repository (package) root, from sources (kernel/) and from the build (dist/kernel/) alike. */
export const REPO_ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));

function findRoot(from: string): string {
  for (let dir = from; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    try {
      if (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')).name === 'clove') return dir;
    } catch {
      // not here: keep walking up
    }
  }
  return process.cwd();
}

export function defaultOptions(overrides: Partial<KernelOptions> = {}): KernelOptions {
  return {
    socketPath: process.env[SOCKET_ENV] ?? DEFAULT_SOCKET,
    dataDir: process.env.CLOVE_DATA_DIR ?? path.join(os.homedir(), '.clove'),
    maxPayload: DEFAULT_MAX_PAYLOAD,
    mailboxSize: DEFAULT_BUDGETS.mailbox_messages,
    eventQueueSize: DEFAULT_BUDGETS.event_queue_events,
    budgets: {},
    maxQueuedBytes: 512 * 1024 * 1024,
    maxDepth: 64,
    maxReplyBytes: 8 * 1024 * 1024,
    operatorReserveFds: 256,
    reservedNames: [],
    logMaxBytes: 10 * 1024 * 1024,
    logKeep: 3,
    logCheckIntervalMs: 2000,
    shutdownGraceMs: 5000,
    sandbox: 'auto',
    durability: 'normal',
    outliveKernel: true,
    spareSandboxes: true,
    mailDurability: 'process',
    pythonPath: [],
    logLevel: 'info',
    agentUidBase: 200_000,
    fastPath: process.env.CLOVE_FAST_PATH === '1',
    fastPathPollUs: pollUsFromEnv(),
    cluster: null,
    relay: null,
    http: null,
    ...overrides,
  };
}

/** The most a reactor may poll before sleeping, in microseconds (KernelOptions.fastPathPollUs). */
export const MAX_FAST_PATH_POLL_US = 1000;
/** What `auto` polls where the kernel has a CPU to spare. */
export const AUTO_FAST_PATH_POLL_US = 50;

/** fastPathPollUs' default: CLOVE_FAST_PATH_POLL_US when set (checked by checkFastPathPollUs), else auto. */
function pollUsFromEnv(): number | 'auto' {
  const v = process.env.CLOVE_FAST_PATH_POLL_US;
  return v === undefined || v === '' || v === 'auto' ? 'auto' : Number(v);
}

/** Refuses a fastPathPollUs that is not `auto` or a whole number of microseconds from 0 to the most. */
export function checkFastPathPollUs(v: number | 'auto'): void {
  if (v !== 'auto' && (!Number.isInteger(v) || v < 0 || v > MAX_FAST_PATH_POLL_US))
    throw new KernelStartError(
      `invalid --fast-path-poll-us ${v} (or CLOVE_FAST_PATH_POLL_US): auto, or microseconds from 0 (never poll) to ${MAX_FAST_PATH_POLL_US}`,
      2,
    );
}

/**
 * The reactor's poll window for fastPathPollUs, and why (for the start log). A number is taken as it is.
 * `auto` polls AUTO_FAST_PATH_POLL_US unless the kernel has no CPU to spare: fewer than 2 CPUs it may run
 * on (`cpus`, its affinity), or a CPU quota under 2 on its cgroup (`quota`, cpuQuotaOf), where a polling
 * reactor would spend the quota and get the whole kernel throttled.
 */
export function resolveFastPathPollUs(
  v: number | 'auto',
  cpus: number,
  quota: number | null,
): { us: number; why: string } {
  if (v !== 'auto') return { us: v, why: v === 0 ? 'off (--fast-path-poll-us 0)' : `${v} µs (set)` };
  if (cpus < 2) return { us: 0, why: `off: ${cpus} CPU (auto)` };
  if (quota !== null && quota < 2) return { us: 0, why: `off: the cgroup's CPU quota is ${quota} (auto)` };
  return { us: AUTO_FAST_PATH_POLL_US, why: `${AUTO_FAST_PATH_POLL_US} µs (auto)` };
}

/** The default budgets of agents and clients, from the options (an unknown budget name is an error). */
export function defaultBudgets(o: KernelOptions): Budgets {
  for (const [k, v] of Object.entries(o.budgets ?? {}))
    if (!(k in DEFAULT_BUDGETS) || !Number.isInteger(v) || v < 0)
      throw new KernelStartError(
        `invalid budget ${k}=${v} (budgets: ${Object.keys(DEFAULT_BUDGETS).join(', ')})`,
        2,
      );
  return {
    ...DEFAULT_BUDGETS,
    ...(o.budgets ?? {}),
    mailbox_messages: o.mailboxSize,
    event_queue_events: o.eventQueueSize,
  };
}

/** The cluster flags as `clove kernel` takes them (strings; docs/cli.md), before validation. */
export interface ClusterFlags {
  /** `--cluster`: etcd endpoints, comma-separated (`etcd://H:P` means `http://H:P`). */
  cluster?: string;
  /** `--nats`: NATS servers, comma-separated. */
  nats?: string;
  node?: string;
  advertise?: string;
  leaseTtl?: number;
  prefix?: string;
}

const NODE_RE = /^[A-Za-z0-9_-]{1,64}$/;
const PREFIX_RE = /^[A-Za-z0-9_-]{1,32}$/;
const HOST_PORT_RE = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/;

/**
 * The cluster's options from `clove kernel`'s flags, with their defaults (node: the host name; advertise:
 * `<host name>:7070`; lease 10 s; prefix `clove`), or null without `--cluster`. A bad flag is a start
 * error (exit 2) naming it.
 */
export function clusterOptions(f: ClusterFlags): ClusterOptions | null {
  const bad = (msg: string) => new KernelStartError(msg, 2);
  if (!f.cluster) {
    const stray = (['nats', 'node', 'advertise', 'leaseTtl', 'prefix'] as const).filter(
      (k) => f[k] !== undefined,
    );
    if (stray.length) throw bad(`--${flagName(stray[0])} needs --cluster etcd://HOST:PORT`);
    return null;
  }
  if (!f.nats) throw bad('--cluster needs --nats nats://HOST:PORT (cross-node mail and events)');
  const etcd = endpoints(f.cluster, ['etcd:', 'http:', 'https:'], '--cluster').map((u) =>
    u.replace(/^etcd:/, 'http:'),
  );
  const nats = endpoints(f.nats, ['nats:', 'tls:'], '--nats');
  const host =
    os
      .hostname()
      .split('.')[0]
      .replace(/[^A-Za-z0-9_-]/g, '-')
      .slice(0, 64) || 'node';
  const node = f.node ?? host;
  if (!NODE_RE.test(node))
    throw bad(`invalid --node ${JSON.stringify(node)}: use 1-64 letters, digits, _ or -`);
  const advertise = f.advertise ?? `${host}:7070`;
  const m = HOST_PORT_RE.exec(advertise);
  if (!m || Number(m[2]) > 65535)
    throw bad(`invalid --advertise ${JSON.stringify(advertise)}: use HOST:PORT`);
  const leaseTtlS = f.leaseTtl ?? 10;
  if (!Number.isInteger(leaseTtlS) || leaseTtlS < 2 || leaseTtlS > 3600)
    throw bad(`invalid --lease-ttl ${leaseTtlS}: whole seconds from 2 to 3600`);
  const prefix = f.prefix ?? 'clove';
  if (!PREFIX_RE.test(prefix))
    throw bad(`invalid --cluster-prefix ${JSON.stringify(prefix)}: use 1-32 letters, digits, _ or -`);
  return { etcd, nats, node, advertise, leaseTtlS, prefix };
}

/**
 * `--http HOST:PORT` as the kernel's option (port 0: any free port). A bad value is a start error
 * (exit 2) naming the flag; a host name that is not an address is resolved when the listener binds.
 */
export function httpOption(v: string | undefined): { host: string; port: number } | null {
  if (v === undefined) return null;
  const m = HOST_PORT_RE.exec(v);
  if (!m || Number(m[2]) > 65535)
    throw new KernelStartError(`invalid --http ${JSON.stringify(v)}: use HOST:PORT, e.g. 127.0.0.1:7080`, 2);
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

function flagName(k: keyof ClusterFlags): string {
  return k === 'leaseTtl' ? 'lease-ttl' : k === 'prefix' ? 'cluster-prefix' : k;
}

/** Comma-separated URLs with one of `schemes` and a host and port (KernelStartError naming the flag). */
function endpoints(v: string, schemes: string[], flag: string): string[] {
  const out = v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (!out.length) throw new KernelStartError(`${flag} needs at least one endpoint`, 2);
  for (const e of out) {
    let u: URL;
    try {
      u = new URL(e);
    } catch {
      throw new KernelStartError(
        `invalid ${flag} endpoint ${JSON.stringify(e)}: use ${schemes[0]}//HOST:PORT`,
        2,
      );
    }
    if (!schemes.includes(u.protocol) || !u.hostname || !u.port)
      throw new KernelStartError(
        `invalid ${flag} endpoint ${JSON.stringify(e)}: use ${schemes.map((x) => `${x}//`).join(' or ')}HOST:PORT`,
        2,
      );
  }
  return out;
}
