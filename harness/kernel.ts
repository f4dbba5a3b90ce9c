/**
 * Test harness: starts real kernels on temporary sockets and data dirs, in this process or as a child
 * process (`bin/clove.js kernel`), and always cleans up, even when a test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { Kernel } from '../kernel/kernel.js';
import { REPO_ROOT, type KernelOptions } from '../kernel/config.js';
import { CloveClient, type ClientOptions } from '../sdk/typescript/client.js';

export { REPO_ROOT };

/** A short temporary directory (AF_UNIX paths are limited to 107 bytes). */
export function tempDir(prefix = 'clv'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  // Sandboxed agents run as an unprivileged uid: they must be able to read scripts put here.
  fs.chmodSync(dir, 0o755);
  return dir;
}

export interface TestKernel {
  kernel: Kernel;
  dir: string;
  socketPath: string;
  dataDir: string;
  /** An operator client (closed by stop()). */
  client(opts?: ClientOptions): Promise<CloveClient>;
  stop(): Promise<void>;
}

/** Starts a kernel inside this process. */
export async function startKernel(opts: Partial<KernelOptions> = {}): Promise<TestKernel> {
  const dir = tempDir();
  const socketPath = opts.socketPath ?? path.join(dir, 'clove.sock');
  const dataDir = opts.dataDir ?? path.join(dir, 'data');
  const kernel = new Kernel({ logLevel: 'warn', shutdownGraceMs: 2000, ...opts, socketPath, dataDir });
  await kernel.start();
  const clients: CloveClient[] = [];
  return {
    kernel,
    dir,
    socketPath,
    dataDir,
    client: async (o = {}) => {
      const c = await CloveClient.connect({ socketPath, ...o });
      clients.push(c);
      return c;
    },
    stop: async () => {
      for (const c of clients) c.close();
      await kernel.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface KernelProcess {
  child: ChildProcess;
  socketPath: string;
  dataDir: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  client(opts?: ClientOptions): Promise<CloveClient>;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * The command line of `clove kernel` (this Node, bin/clove.js) on that socket and data dir, then `extra`:
 * for startKernelProcess, and for tests that start a kernel under another program (prlimit, a cgroup).
 */
export function kernelCommand(
  at: { socketPath: string; dataDir: string },
  extra: string[] = [],
  nodeArgs: string[] = [],
): string[] {
  return [
    process.execPath,
    ...nodeArgs,
    path.join(REPO_ROOT, 'bin', 'clove.js'),
    '--socket',
    at.socketPath,
    'kernel',
    '--data-dir',
    at.dataDir,
    ...extra,
  ];
}

/** Starts `clove kernel` as a child process (needs `npm run build`) and waits until it accepts. */
export async function startKernelProcess(
  args: {
    socketPath?: string;
    dataDir?: string;
    extra?: string[];
    nodeArgs?: string[];
    /** How long it may take to listen (default 15 s). */
    timeoutMs?: number;
    /** Added to this process's environment for the kernel's. */
    env?: Record<string, string>;
  } = {},
): Promise<KernelProcess> {
  // A temporary directory only for what the caller did not place (a restarted node reuses its own).
  const dir = args.socketPath && args.dataDir ? '' : tempDir();
  const socketPath = args.socketPath ?? path.join(dir, 'clove.sock');
  const dataDir = args.dataDir ?? path.join(dir, 'data');
  // e.g. --cpu-prof for benchmarks (NODE_OPTIONS cannot carry it)
  const [node, ...argv] = kernelCommand({ socketPath, dataDir }, args.extra, args.nodeArgs);
  const child = spawn(node, argv, {
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(args.env ? { env: { ...process.env, ...args.env } } : {}),
  });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  try {
    await waitForSocket(socketPath, args.timeoutMs ?? 15_000, exited);
  } catch (e) {
    // What the kernel said before it died (why it could not join a cluster, a bad flag…) is the clue.
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    const { code, signal } = await exited;
    throw new Error(
      `${(e as Error).message} (exit ${code ?? signal}); stderr: ${err.slice(-2000).trim() || '(empty)'}`,
      {
        cause: e,
      },
    );
  }
  const clients: CloveClient[] = [];
  return {
    child,
    socketPath,
    dataDir,
    stderr: () => err,
    exited,
    client: async (o = {}) => {
      const c = await CloveClient.connect({ socketPath, ...o });
      clients.push(c);
      return c;
    },
    stop: async (signal = 'SIGTERM') => {
      for (const c of clients) c.close();
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export async function waitForSocket(
  file: string,
  timeoutMs: number,
  abort?: Promise<unknown>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let dead = false;
  void abort?.then(() => (dead = true));
  while (Date.now() < deadline && !dead) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(file);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    dead
      ? `kernel exited before listening on ${file}`
      : `kernel did not listen on ${file} within ${timeoutMs} ms`,
  );
}

/** Polls `fn` until it returns a truthy value (or throws after `timeoutMs`). */
export async function until<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
