/**
 * The sandbox as the kernel uses it, chosen once at start: peer credentials of a connection, the agent
 * that owns a pid, the uid an agent runs as, the spawner, and the cgroup root that metrics are confined
 * to. The agent's uid is decided here and nowhere else (`account`).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import type { Logger } from 'pino';
import { KernelStartError } from '../core/errors.js';
import { PlainSpawner } from './plain-spawner.js';
import type { Account, AgentProcess, Spawner } from './types.js';
import * as sandbox from './index.js';

export type SandboxMode = 'auto' | 'native' | 'off';

export interface SandboxRuntime {
  /** What HELLO and the start-up log say about isolation on this host. */
  summary: Record<string, unknown>;
  peerCredentials(sock: net.Socket): { pid: number; uid: number; gid: number };
  ownerOf(pid: number): number | undefined;
  /**
   * The uid/gid agent `id` runs as: as root, a sandboxed agent gets one of its own (`uidBase + id`, so
   * no agent can read another's files); an unsandboxed agent runs as the kernel's own uid (null), as
   * in the public kernel, and only operators may ask for that; without root there is no other uid.
   */
  account(id: number, sandboxed: boolean): Account | null;
  /** Creates (or re-owns) an agent's work directory, mode 0700, owned by the uid it runs as. */
  prepareWorkDir(dir: string, account: Account | null): void;
  spawner(): Spawner;
  /** The cgroup root metrics are confined to (undefined without cgroups). */
  cgroupRoot(): sandbox.CgroupRoot | undefined;
  /** The cgroup of a running agent's process, when the native spawner made one. */
  cgroupOf(proc: AgentProcess | null): sandbox.AgentCgroup | undefined;
  close(): Promise<void>;
  /** A hand-over to the next kernel: agents and their cgroups stay, nothing is signalled. */
  detach(): void;
}

/**
 * `dataDir` is masked in every sandboxed agent's view (policy privatePaths): an agent sees its own work
 * directory and the agent socket there, never the state store, the logs or other agents' directories.
 */
export async function loadSandbox(
  mode: SandboxMode,
  log: Logger,
  uidBase: number,
  dataDir?: string,
  /** Agents outlive the kernel; `keepPids`: those a dead kernel left, re-adopted (docs/restart.md). */
  restart: { outliveKernel: boolean; keepPids: ReadonlySet<number> } = {
    outliveKernel: false,
    keepPids: new Set(),
  },
): Promise<SandboxRuntime> {
  if (!sandbox.nativeAvailable()) {
    throw new KernelStartError(
      'the native addon is not built (run `bash ci/setup.sh`): peer credentials are required',
      5,
    );
  }
  const isRoot = process.geteuid?.() === 0;
  const peerCredentials = (sock: net.Socket) => sandbox.peerCredentials(sock);
  const prepareWorkDir = (dir: string, account: Account | null) => {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    if (account) fs.chownSync(dir, account.uid, account.gid);
    else if (isRoot) fs.chownSync(dir, process.geteuid!(), process.getegid!());
  };
  if (mode === 'off') {
    log.warn('sandbox disabled (--sandbox off): agents run as plain processes with the kernel uid');
    const plain = new PlainSpawner('sandbox disabled (--sandbox off)');
    return {
      summary: { mode: 'off', spawner: 'plain', degraded_reason: 'sandbox disabled (--sandbox off)' },
      peerCredentials,
      ownerOf: () => undefined,
      account: () => null,
      prepareWorkDir,
      spawner: () => plain,
      cgroupRoot: () => undefined,
      cgroupOf: () => undefined,
      close: async () => {},
      detach: () => {},
    };
  }
  const native = new sandbox.NativeSpawner({
    warn: (m) => log.warn(m),
    ...(dataDir ? { privatePaths: [path.resolve(dataDir)] } : {}),
    // `--sandbox native` insists on the complete sandbox; `auto` degrades loudly (except in CI).
    ...(mode === 'native' ? { require: true } : {}),
    outliveKernel: restart.outliveKernel,
    keepPids: restart.keepPids,
    // What this data dir's dead kernel left is for this data dir's next kernel to re-adopt or kill,
    // nobody else's (a kernel of another data dir starting meanwhile leaves it alone).
    ...(dataDir ? { rootTag: dataDirTag(dataDir) } : {}),
  });
  try {
    await native.init();
  } catch (e) {
    throw new KernelStartError(`sandbox unavailable: ${(e as Error).message}`, 5);
  }
  const layout = native.layout;
  const controllers = layout
    ? Object.fromEntries(
        Object.entries(layout.controllers).map(([c, h]) => [
          c,
          h ? `v${(h as { version: number }).version}` : 'none',
        ]),
      )
    : {};
  // Only root can switch uids; in rootless mode the only uid mapped is the kernel's.
  const ownUids = isRoot && native.mode !== 'rootless';
  const summary = {
    mode: native.mode,
    spawner: 'native',
    cgroup_version: layout?.version ?? 'none',
    controllers,
    agent_uids: ownUids ? (uidBase > 0 ? `${uidBase} + agent id` : native.policy.uid) : 'kernel uid',
    unsandboxed_uid: 'kernel uid',
    ...(native.degradedReasons.length ? { degraded_reason: native.degradedReasons.join('; ') } : {}),
  };
  return {
    summary,
    peerCredentials,
    ownerOf: (pid) => native.ownerOf(pid),
    account: (id, sandboxed) => {
      if (!sandboxed || !ownUids) return null;
      if (uidBase <= 0) return { uid: native.policy.uid, gid: native.policy.gid };
      return { uid: uidBase + id, gid: uidBase + id };
    },
    prepareWorkDir,
    spawner: () => native,
    cgroupRoot: () => native.cgroupRoot,
    cgroupOf: (proc) =>
      proc && 'cgroup' in proc ? ((proc as { cgroup?: sandbox.AgentCgroup }).cgroup ?? undefined) : undefined,
    close: () => native.close(),
    detach: () => native.detach(),
  };
}

/** 8 hex digits naming a data dir (its real path) in cgroup root names (CgroupRoot.tag). */
export function dataDirTag(dataDir: string): string {
  let real = path.resolve(dataDir);
  try {
    real = fs.realpathSync(real);
  } catch {
    /* not there yet: its absolute path */
  }
  return crypto.createHash('sha256').update(real).digest('hex').slice(0, 8);
}
