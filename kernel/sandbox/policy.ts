/**
 * Sandbox policy: defaults and validation. The addon applies exactly what it is given; everything that
 * is a decision lives here.
 */
import path from 'node:path';
import { SCHEMA_DEFS } from '../../protocol/index.js';
import type { ResourceLimits } from './types.js';
import { PolicyError } from './errors.js';

/** Reference defaults of SPAWN `limits` (clove-wire-reference.md section 3.5). */
export const DEFAULT_LIMITS: Readonly<Required<ResourceLimits>> = Object.freeze({
  memory: 256 * 1024 * 1024,
  max_pids: 64,
  cpu_quota: 100_000,
  cpu_period: 100_000,
  cpu_shares: 1024,
});

/** Kernel-wide sandbox settings (NativeSpawner options). */
export interface SandboxPolicy {
  /** uid/gid agents run as; never 0. Default 65534/65534 (nobody/nogroup). */
  uid: number;
  gid: number;
  /** RLIMIT_NOFILE soft/hard. Default 1024. */
  maxOpenFiles: number;
  /** Size of the private /tmp (and /dev/shm) tmpfs in bytes; it is also charged to the agent's memory cgroup. Default 64 MiB. */
  tmpSize: number;
  /** Make spec.cwd writable inside the read-only root (never for "/"). Default true. */
  writableCwd: boolean;
  /** Extra directories made writable for every agent. Default none. */
  writablePaths: string[];
  /**
   * Directories masked in every sandboxed agent's view (an empty tmpfs), whatever their modes: only
   * what an agent needs below them stays visible (its work directory, the agent socket's directory).
   * The kernel passes its data dir, so that agents never see each other's work directories, the state
   * store or the logs. Default none.
   */
  privatePaths: string[];
  /** How long spawn() waits for the agent's exec. Default 10 s. */
  startTimeoutMs: number;
  /**
   * 'auto' (default): full sandbox as root, user namespaces without root, else plain processes.
   * The other values force a mode (tests, debugging).
   */
  mode: 'auto' | 'root' | 'rootless' | 'plain';
  /** Throw SandboxUnavailableError instead of degrading. Default: true when CI=true. */
  require: boolean;
}

export function defaultPolicy(env: NodeJS.ProcessEnv = process.env): SandboxPolicy {
  return {
    uid: 65534,
    gid: 65534,
    maxOpenFiles: 1024,
    tmpSize: 64 * 1024 * 1024,
    writableCwd: true,
    writablePaths: [],
    privatePaths: [],
    startTimeoutMs: 10_000,
    mode: 'auto',
    require: env.CI === 'true',
  };
}

function int(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v))
    throw new PolicyError(field, `must be an integer, got ${JSON.stringify(v)}`);
  if (v < min || v > max) throw new PolicyError(field, `must be in [${min}, ${max}], got ${v}`);
  return v;
}

/** Merges and validates a partial policy. */
export function resolvePolicy(partial: Partial<SandboxPolicy> = {}): SandboxPolicy {
  const p = { ...defaultPolicy(), ...partial };
  int('uid', p.uid, 1, 2 ** 32 - 2);
  int('gid', p.gid, 1, 2 ** 32 - 2);
  int('maxOpenFiles', p.maxOpenFiles, 16, 1 << 20);
  int('tmpSize', p.tmpSize, 1 << 20, 2 ** 40);
  int('startTimeoutMs', p.startTimeoutMs, 100, 600_000);
  if (!['auto', 'root', 'rootless', 'plain'].includes(p.mode))
    throw new PolicyError('mode', `unknown mode ${String(p.mode)}`);
  for (const w of p.writablePaths) checkAbsolute('writablePaths', w);
  for (const w of p.privatePaths) checkAbsolute('privatePaths', w);
  return { ...p, writablePaths: [...p.writablePaths], privatePaths: [...p.privatePaths] };
}

export function checkAbsolute(field: string, p: unknown): string {
  if (typeof p !== 'string' || !path.isAbsolute(p) || p.includes('\0'))
    throw new PolicyError(field, `must be an absolute path, got ${JSON.stringify(p)}`);
  return path.normalize(p);
}

const LIMIT_BOUNDS = (
  SCHEMA_DEFS.$defs.Limits as { properties: Record<string, { minimum?: number; maximum?: number }> }
).properties;

/**
 * SPAWN `limits` with defaults applied. Bounds are what the kernels accept: CFS periods 1 ms..1 s, quotas
 * from 1 ms; memory at least 4 MiB (clove-init and a shell must fit); at least one agent process.
 */
export function resolveLimits(limits: ResourceLimits | undefined): Required<ResourceLimits> {
  const l = { ...DEFAULT_LIMITS };
  for (const [k, v] of Object.entries(limits ?? {})) {
    if (v === undefined || v === null) continue;
    if (!(k in l)) throw new PolicyError(`limits.${k}`, 'unknown limit');
    (l as Record<string, number>)[k] = v as number;
  }
  // The bounds are the contract's (protocol/families/lifecycle.json, `Limits`), checked here too for
  // callers of the sandbox that do not come through a SPAWN request.
  for (const [k, b] of Object.entries(LIMIT_BOUNDS))
    int(
      `limits.${k}`,
      (l as Record<string, number>)[k],
      b.minimum ?? 0,
      b.maximum ?? Number.MAX_SAFE_INTEGER,
    );
  return l;
}

/** cgroup v2 cpu.weight for v1-style shares (reference: shares*100/1024 clamped 1..10000). */
export function sharesToWeight(shares: number): number {
  return Math.min(10_000, Math.max(1, Math.floor((shares * 100) / 1024)));
}

/** Hostname of an agent's UTS namespace: clove-<name>, cut to the 64 bytes the kernel allows. */
export function agentHostname(name: string): string {
  const clean = name.replace(/[^A-Za-z0-9_.-]/g, '-');
  return `clove-${clean}`.slice(0, 64);
}

/** Directory name of an agent's cgroup: <name>_<id>, reduced to characters safe in a path component. */
export function cgroupLeafName(name: string, agentId: number): string {
  const clean = name.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 100) || 'agent';
  return `${clean}_${agentId}`;
}
