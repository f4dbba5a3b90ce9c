/**
 * What the kernel needs from the sandbox layer (kernel/sandbox/, over the native addon): peer
 * credentials of a connection, the agent that owns a pid, the spawner to use, and the cgroup root that
 * metrics are confined to. Chosen once at start.
 */
import type net from 'node:net';
import type pino from 'pino';
import type { SandboxMode } from './config.js';
import { KernelStartError } from './errors.js';
import { PlainSpawner } from './supervisor/plain-spawner.js';
import type { AgentProcess, Spawner } from './supervisor/spawner.js';
import * as sandbox from './sandbox/index.js';

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface SandboxRuntime {
  /** What HELLO and the start-up log say about isolation on this host. */
  summary: Record<string, unknown>;
  peerCredentials(sock: net.Socket): PeerCred;
  ownerOf(pid: number): number | undefined;
  /** The uid/gid agent `id` runs as (null: the kernel's own, when it is not root). */
  agentUid(id: number): { uid: number; gid: number } | null;
  /** The spawner for an agent that asked for (`true`) or declined (`false`) the sandbox. */
  spawner(sandboxed: boolean): Spawner;
  /** The cgroup root metrics are confined to (undefined without cgroups). */
  cgroupRoot(): sandbox.CgroupRoot | undefined;
  /** The cgroup of a running agent's process, when the native spawner made one. */
  cgroupOf(proc: AgentProcess | null): sandbox.AgentCgroup | undefined;
  close(): Promise<void>;
}

export async function loadSandbox(
  mode: SandboxMode,
  log: pino.Logger,
  uidBase: number,
): Promise<SandboxRuntime> {
  if (!sandbox.nativeAvailable()) {
    throw new KernelStartError(
      'the native addon is not built (run `bash ci/setup.sh`): peer credentials are required',
      5,
    );
  }
  const plain = new PlainSpawner('sandbox disabled (--sandbox off)');
  const peerCredentials = (sock: net.Socket) => sandbox.peerCredentials(sock);
  if (mode === 'off') {
    log.warn('sandbox disabled (--sandbox off): agents run as plain processes with the kernel uid');
    return {
      summary: { mode: 'off', spawner: 'plain', degraded_reason: 'sandbox disabled (--sandbox off)' },
      peerCredentials,
      ownerOf: () => undefined,
      agentUid: () => null,
      spawner: () => plain,
      cgroupRoot: () => undefined,
      cgroupOf: () => undefined,
      close: async () => {},
    };
  }
  const native = new sandbox.NativeSpawner({
    warn: (m) => log.warn(m),
    // `--sandbox native` insists on the complete sandbox; `auto` degrades loudly (except in CI).
    ...(mode === 'native' ? { require: true } : {}),
  });
  try {
    native.init();
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
  const summary = {
    mode: native.mode,
    spawner: 'native',
    cgroup_version: layout?.version ?? 'none',
    controllers,
    agent_uids:
      process.geteuid?.() === 0 ? (uidBase > 0 ? `${uidBase} + agent id` : native.policy.uid) : 'kernel uid',
    ...(native.degradedReasons.length ? { degraded_reason: native.degradedReasons.join('; ') } : {}),
  };
  const dropsUid = process.geteuid?.() === 0;
  return {
    summary,
    peerCredentials,
    ownerOf: (pid) => native.ownerOf(pid),
    agentUid: (id) => {
      if (!dropsUid) return null;
      if (uidBase <= 0) return { uid: native.policy.uid, gid: native.policy.gid };
      return { uid: uidBase + id, gid: uidBase + id };
    },
    spawner: () => native,
    cgroupRoot: () => native.cgroupRoot,
    cgroupOf: (proc) =>
      proc && 'cgroup' in proc ? ((proc as { cgroup?: sandbox.AgentCgroup }).cgroup ?? undefined) : undefined,
    close: () => native.close(),
  };
}
