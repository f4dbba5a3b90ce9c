/** Helpers to run helper processes of the benches and to start the kernel as a process. */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { REPO_ROOT } from '../../kernel/config.js';
import { startKernelProcess, type KernelProcess } from '../../harness/kernel.js';

export const DIST_BENCH = path.join(REPO_ROOT, 'dist', 'bench');
export const BENCH_SRC = path.join(REPO_ROOT, 'bench');

/** Starts `node dist/bench/lib/<script>.js args…` and resolves with it and the first `ready <x>` line. */
export async function startHelper(
  script: string,
  args: string[],
  opts: { stdin?: boolean } = {},
): Promise<{ child: ChildProcess; ready: string; lines: readline.Interface }> {
  const child = spawn(process.execPath, [path.join(DIST_BENCH, 'lib', script), ...args], {
    stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'inherit'],
  });
  const rl = readline.createInterface({ input: child.stdout! });
  const ready = await new Promise<string>((resolve, reject) => {
    rl.once('line', (l) =>
      l.startsWith('ready') ? resolve(l.slice(6).trim()) : reject(new Error(`helper ${script}: ${l}`)),
    );
    child.once('exit', (code) => reject(new Error(`helper ${script} exited with ${code}`)));
  });
  return { child, ready, lines: rl };
}

export function stopChild(child: ChildProcess | undefined, sig: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(sig);
  });
}

/** Runs a command to completion and returns its wall time in ms (spawn → exit event). */
export function timeCommand(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(cmd, args, { stdio: 'ignore' });
    c.once('error', reject);
    c.once('exit', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}`));
      else resolve(ms);
    });
  });
}

let profileDir: string | undefined;

/**
 * With `--cpu-prof <dir>` on a bench's command line, the kernel processes it starts run under
 * `node --cpu-prof` (profile written to <dir> when the kernel exits; NODE_OPTIONS cannot carry
 * --cpu-prof, so startKernel() adds it to the kernel's own command line).
 */
export function profileKernelIfAsked(dir: string | undefined): void {
  profileDir = dir ? path.resolve(dir) : undefined;
}

/**
 * Starts the kernel as a process through the harness, under `node --cpu-prof` when profiling was asked
 * for (the profile is written to that directory when the kernel exits).
 */
export async function startKernel(
  args: { extra?: string[]; nodeArgs?: string[] } = {},
): Promise<KernelProcess> {
  if (!profileDir) return startKernelProcess(args);
  fs.mkdirSync(profileDir, { recursive: true });
  const k = await startKernelProcess({
    ...args,
    nodeArgs: [...(args.nodeArgs ?? []), '--cpu-prof', `--cpu-prof-dir=${profileDir}`],
  });
  const stop = k.stop;
  return {
    ...k,
    stop: async (signal) => {
      const r = await stop(signal);
      console.error(`kernel CPU profile written to ${profileDir}`);
      return r;
    },
  };
}
