/**
 * A fleet of idle agents under one kernel process, for the memory and CPU benchmarks. An idle agent
 * (bench/agents/idle_agent.c, or idle_agent.py) connects, SENDs {"up": pid} to the bench and then blocks
 * in RECV with the longest timeout the kernel allows.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { KernelProcess } from '../../harness/kernel.js';
import { REPO_ROOT } from '../../kernel/config.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { DIST_BENCH, startKernel } from './child.js';

export type AgentKind = 'c' | 'python';

/** The idle agent's executable: the C agent compiled into dist/bench/agents (world-readable, so a
 *  sandboxed agent uid can run it), or the Python script. */
export function idleAgentScript(kind: AgentKind): string {
  if (kind === 'python') return path.join(REPO_ROOT, 'bench', 'agents', 'idle_agent.py');
  const out = path.join(DIST_BENCH, 'agents', 'idle_agent');
  const src = path.join(REPO_ROOT, 'bench', 'agents', 'idle_agent.c');
  if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(src).mtimeMs) {
    fs.mkdirSync(path.dirname(out), { recursive: true, mode: 0o755 });
    execFileSync(process.env.CC ?? 'cc', ['-O2', '-o', out, src], { stdio: 'inherit' });
    fs.chmodSync(out, 0o755);
  }
  return out;
}

export class Fleet {
  private constructor(
    readonly kp: KernelProcess,
    private readonly inbox: CloveClient,
    private readonly ctl: CloveClient,
    private readonly script: string,
  ) {}

  size = 0;
  private up = 0;
  private draining: Promise<void> | null = null;

  static async start(kind: AgentKind, kernelArgs: string[] = []): Promise<Fleet> {
    const script = idleAgentScript(kind);
    const kp = await startKernel({ extra: kernelArgs });
    const inbox = await kp.client();
    await inbox.register('bench');
    const ctl = await kp.client();
    return new Fleet(kp, inbox, ctl, script);
  }

  get pid(): number {
    return this.kp.child.pid!;
  }

  /** Spawns agents until there are `n`, and waits until every one of them has said it is up. */
  async growTo(n: number, onProgress?: (up: number) => void): Promise<void> {
    const target = n;
    const drain = this.drainUntil(target, onProgress);
    drain.catch(() => {}); // awaited below; a failed SPAWN must not leave it unhandled
    const BATCH = 25;
    while (this.size < target) {
      const k = Math.min(BATCH, target - this.size);
      const batch = Array.from({ length: k }, (_, i) =>
        this.ctl.spawn({
          script: this.script,
          name: `idle-${this.size + i}`,
          restart_policy: 'never',
        } as never),
      );
      this.size += k;
      await Promise.all(batch);
    }
    await drain;
  }

  private async drainUntil(target: number, onProgress?: (up: number) => void): Promise<void> {
    const deadline = Date.now() + 600_000;
    while (this.up < target) {
      if (Date.now() > deadline) throw new Error(`only ${this.up} of ${target} agents came up`);
      const r = await this.inbox.recv({ max: 1000, timeoutMs: 10_000 });
      this.up += r.count;
      onProgress?.(this.up);
    }
  }

  async agentsRunning(): Promise<number> {
    return (await this.ctl.list()).filter((a) => a.running).length;
  }

  async stop(): Promise<void> {
    await this.kp.stop();
  }
}
