/**
 * What the kernel needs from the sandbox layer (kernel/sandbox/, over the native addon): peer
 * credentials of a connection, the agent that owns a pid, and the spawner to use. Chosen once at start.
 */
import type net from 'node:net';
import type pino from 'pino';
import type { SandboxMode } from './config.js';
import { KernelStartError } from './errors.js';
import { PlainSpawner } from './supervisor/plain-spawner.js';
import type { Spawner } from './supervisor/spawner.js';

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
  /** The uid/gid an agent runs as (null: the kernel's own). */
  agentUid(sandboxed: boolean): { uid: number; gid: number } | null;
  /** The spawner for an agent that asked for (`true`) or declined (`false`) the sandbox. */
  spawner(sandboxed: boolean): Spawner;
  close(): Promise<void>;
}

interface SandboxModule {
  peerCredentials(sock: net.Socket): PeerCred;
  nativeAvailable(): boolean;
}

export async function loadSandbox(mode: SandboxMode, log: pino.Logger): Promise<SandboxRuntime> {
  let mod: SandboxModule;
  try {
    mod = (await import('./sandbox/index.js')) as unknown as SandboxModule;
  } catch (e) {
    throw new KernelStartError(`cannot load the sandbox layer: ${(e as Error).message}`, 5);
  }
  if (!mod.nativeAvailable()) {
    throw new KernelStartError('the native addon is not built (run `npm run build:native`): peer credentials are required', 5);
  }
  const plain = new PlainSpawner();
  if (mode === 'native') throw new KernelStartError('the native sandboxed spawner is not available in this build', 5);
  const reason = mode === 'off' ? 'sandbox disabled (--sandbox off)' : 'native sandbox not available: plain processes';
  if (mode === 'auto') log.warn(reason);
  const degraded = new PlainSpawner(reason);
  return {
    summary: { mode, spawner: 'plain', degraded_reason: reason },
    peerCredentials: (sock) => mod.peerCredentials(sock),
    ownerOf: () => undefined,
    agentUid: () => null,
    spawner: (sandboxed) => (sandboxed ? degraded : plain),
    close: async () => {},
  };
}
