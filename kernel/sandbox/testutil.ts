/** Helpers shared by the sandbox tests (not part of the public API). */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { reachableBy } from './access.js';
import type { AgentProcess, ExitInfo, SpawnSpec } from './types.js';

export const TESTDATA = path.join(path.dirname(fileURLToPath(import.meta.url)), 'testdata');

/** A python3 the sandbox uid (65534) can execute: the resolved interpreter if reachable, else /usr/bin/python3. */
export function sandboxPython(uid = 65534, gid = 65534): string | undefined {
  const cands: string[] = [];
  try {
    cands.push(
      execFileSync('python3', ['-c', 'import sys;print(sys.executable)'], { encoding: 'utf8' }).trim(),
    );
  } catch {
    /* none on PATH */
  }
  cands.push('/usr/bin/python3', '/usr/local/bin/python3');
  for (const c of cands) if (c && reachableBy(c, uid, gid, 1)) return c;
  return undefined;
}

/** A fresh directory owned by the sandbox uid, readable by everyone (agents' cwd). */
export function workDir(prefix: string, uid = 65534, gid = 65534): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(d, 0o755);
  if (process.geteuid?.() === 0) fs.chownSync(d, uid, gid);
  return d;
}

let nextId = 1000;

export function spec(over: Partial<SpawnSpec> & { argv: string[]; cwd: string; logFd: number }): SpawnSpec {
  const agentId = over.agentId ?? nextId++;
  return {
    agentId,
    name: over.name ?? `t${agentId}`,
    env: { PATH: '/usr/local/bin:/usr/bin:/bin' },
    sandboxed: true,
    network: false,
    limits: {},
    // The sandbox's unprivileged default (as the kernel gives a uid of its own to each agent).
    account: { uid: 65534, gid: 65534 },
    ...over,
  };
}

/** How the agent's process ended, once it has. */
export function exitOf(a: AgentProcess): Promise<ExitInfo> {
  return new Promise((resolve) => a.onExit(resolve));
}

export function readLog(file: string): string {
  return fs.readFileSync(file, 'utf8');
}

/** key=value lines of a log into an object. */
export function kv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** Direct children of this process that are zombies (state Z). */
export function zombieChildren(): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[1]) === process.pid && rest[0] === 'Z') out.push(Number(e));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** All direct children of this process. */
export function childrenOfSelf(): number[] {
  const out: number[] = [];
  for (const t of fs.readdirSync(`/proc/${process.pid}/task`)) {
    try {
      for (const c of fs.readFileSync(`/proc/${process.pid}/task/${t}/children`, 'utf8').split(' '))
        if (c.trim()) out.push(Number(c));
    } catch {
      /* gone */
    }
  }
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
