/**
 * EXEC against a real kernel (issue 10 §3). Sandboxed Python agents with DEFAULT rights (operator-spawned,
 * no `permissions`: `standard`) serve requests from the test's operator (testdata/exec_agent.py): each
 * calls EXEC through the Python SDK's exec(command, cwd, timeout) or a raw call_json(SYS_EXEC, …) and sends
 * the kernel's reply back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, type TestKernel } from '../../../harness/kernel.js';
import { CloveClient } from '../../../sdk/typescript/client.js';

const AGENT = path.join(import.meta.dirname, 'testdata', 'exec_agent.py');
const isRoot = process.geteuid?.() === 0;

type Json = Record<string, unknown>;

let tk: TestKernel;
let op: CloveClient;
let scripts: string;
let nextId = 1;
const inbox = new Map<number, Json>();

/** Sends a request to agent `name` and waits for its answer (matched by id). */
async function ask(name: string, msg: Json, timeoutMs = 30_000): Promise<Json> {
  const id = nextId++;
  await op.send(name, { ...msg, id });
  const deadline = Date.now() + timeoutMs;
  while (!inbox.has(id)) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no answer from ${name} to ${JSON.stringify(msg)}`);
    const r = await op.recv({ max: 10, timeoutMs: Math.min(left, 1000) });
    for (const m of r.messages) {
      const body = m.message as Json;
      if (typeof body?.id === 'number') inbox.set(body.id, body);
    }
  }
  const out = inbox.get(id)!;
  inbox.delete(id);
  return out;
}

/** EXEC through the agent: raw payload. */
async function exec(name: string, payload: Json): Promise<Json> {
  const r = await ask(name, { op: 'exec', payload });
  if (r.error) throw new Error(String(r.error));
  return r.reply as Json;
}

/** EXEC through the agent's Python SDK: exec(command, cwd, timeout). */
async function sdkExec(name: string, command: string, cwd?: string, timeout?: number): Promise<Json> {
  const r = await ask(name, { op: 'exec', sdk: true, args: { command, cwd, timeout } });
  if (r.error) throw new Error(String(r.error));
  return r.reply as Json;
}

async function spawnAgent(name: string, extra: Json = {}): Promise<number> {
  const r = await op.spawn({
    name,
    script: path.join(scripts, 'exec_agent.py'),
    restart_policy: 'never',
    ...extra,
  });
  // Serving once its first RECV is parked: a whoami round trip.
  await ask(name, { op: 'whoami' });
  return r.id;
}

beforeAll(async () => {
  tk = await startKernel();
  op = await tk.client({ timeoutMs: 60_000 });
  // The agent's script in a directory of its own (readable by the agents' uids).
  scripts = tempDir('clx');
  fs.copyFileSync(AGENT, path.join(scripts, 'exec_agent.py'));
  await spawnAgent('ex1');
}, 60_000);

afterAll(async () => {
  await tk?.stop();
  if (scripts) fs.rmSync(scripts, { recursive: true, force: true });
});

describe('EXEC: the Done-when commands, default rights, Python SDK', () => {
  it('echo', async () => {
    const r = await sdkExec('ex1', 'echo hello');
    expect(r).toMatchObject({ success: true, stdout: 'hello\n', stderr: '', exit_code: 0, shell: true });
  });

  it('a pipe to wc -l', async () => {
    const r = await sdkExec('ex1', "printf 'a\\nb\\nc\\n' | wc -l");
    expect(r).toMatchObject({ success: true, exit_code: 0 });
    expect(String(r.stdout).trim()).toBe('3');
  });

  it('pwd with cwd', async () => {
    const r = await sdkExec('ex1', 'pwd', '/tmp');
    expect(r).toMatchObject({ success: true, stdout: '/tmp\n' });
  });

  it('a failing ls', async () => {
    const r = await sdkExec('ex1', 'ls /definitely/not/here');
    expect(r.success).toBe(false);
    expect(r.exit_code).not.toBe(0);
    expect(r.exit_code).toBeGreaterThan(0);
    expect(String(r.stderr)).toMatch(/No such file/);
    expect(r.stdout).toBe('');
    expect(String(r.output)).toMatch(/No such file/);
  });

  it('sleep 1 && echo', async () => {
    const t0 = Date.now();
    const r = await sdkExec('ex1', 'sleep 1 && echo done');
    expect(r).toMatchObject({ success: true, stdout: 'done\n' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
  });
});

describe('EXEC: argv form and extensions', () => {
  it('argv runs without a shell: no expansion, words kept whole', async () => {
    const r = await exec('ex1', { argv: ['printf', '%s|', 'a b', '$HOME', '*', ';'] });
    expect(r).toMatchObject({ success: true, stdout: 'a b|$HOME|*|;|', shell: false });
    expect(r.program).toMatch(/\/printf$/);
  });

  it('stdin, env and max_output (truncated)', async () => {
    expect(await exec('ex1', { argv: ['cat'], stdin: 'from stdin' })).toMatchObject({ stdout: 'from stdin' });
    expect(await exec('ex1', { command: 'echo "$GREETING"', env: { GREETING: 'hi there' } })).toMatchObject({
      stdout: 'hi there\n',
    });
    const r = await exec('ex1', { command: "head -c 5000 /dev/zero | tr '\\0' a", max_output: 100 });
    expect(r).toMatchObject({ success: true, truncated: true });
    expect(String(r.stdout).length).toBe(100);
  });

  it('endless output: kept up to max_output, read up to 64 MiB, then the command gets EPIPE', async () => {
    const t0 = Date.now();
    const r = await exec('ex1', { argv: ['cat', '/dev/zero'], timeout: 60, max_output: 1000 });
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(r).toMatchObject({ success: false, truncated: true, timed_out: false, signal: 'SIGPIPE' });
    expect(String(r.stdout).length).toBe(1000);
  });

  it('stdout and stderr apart, and merged in `output`', async () => {
    const r = await exec('ex1', { command: 'echo out; echo err >&2; exit 3' });
    expect(r).toMatchObject({ success: false, exit_code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect(String(r.output).split('\n').sort()).toEqual(['', 'err', 'out']);
  });

  it('async: true is accepted at once; neither command nor argv is invalid', async () => {
    const r = await exec('ex1', { command: 'true', async: true });
    expect(r).toMatchObject({ success: true, async: true, status: 'accepted' });
    expect(await exec('ex1', {})).toMatchObject({ success: false, code: 'invalid_request' });
    expect(await exec('ex1', { command: 'true', argv: ['true'] })).toMatchObject({ code: 'invalid_request' });
    expect(await exec('ex1', { argv: ['no-such-program-xyz'] })).toMatchObject({ code: 'not_found' });
  });
});

describe('EXEC runs inside the agent, never in the kernel', () => {
  it("with the agent's uid, PID namespace, cgroup, rlimits, no capabilities and no kernel fd", async () => {
    const me = await ask('ex1', { op: 'whoami' });
    const r = await exec('ex1', {
      command: [
        'id -u',
        'id -g',
        'readlink /proc/self/ns/pid',
        'readlink /proc/self/ns/mnt',
        'cat /proc/1/cmdline | tr "\\0" " "; echo',
        'cut -d" " -f4 /proc/$$/stat',
        // (no pipe in this statement: the shell would hold its fds while ls lists them)
        'echo FDS; ls /proc/$$/fd; echo END',
        'ulimit -n',
        'grep -E "^(NoNewPrivs|CapEff|Seccomp):" /proc/self/status | tr "\\t" " "',
        'echo ---',
        'cat /proc/self/cgroup',
      ].join('; '),
    });
    expect(r.success).toBe(true);
    const [all, cgroup] = String(r.stdout).split('---\n');
    const fds = /FDS\n([\s\S]*?)END\n/.exec(all)![1].trim().split('\n').join(' ');
    const head = all.replace(/FDS\n[\s\S]*?END\n/, '');
    const lines = head.trim().split('\n');
    expect(Number(lines[0])).toBe(me.uid);
    expect(Number(lines[1])).toBe(me.gid);
    if (isRoot) expect(me.uid).not.toBe(0);
    expect(lines[2]).toBe(me.pidns);
    expect(lines[3]).toBe(me.mntns);
    expect(lines[2]).not.toBe(fs.readlinkSync('/proc/self/ns/pid'));
    expect(lines[4]).toMatch(/clove-init/); // PID 1 of the namespace is the agent's init
    expect(lines[5]).toBe('0'); // its parent is outside the namespace (the kernel): 0 from inside
    expect(fds).toBe('0 1 2'); // stdin and the two pipes, nothing of the kernel's
    expect(lines[6]).toBe('1024');
    expect(head).toMatch(/NoNewPrivs: 1/);
    expect(head).toMatch(/CapEff: 0000000000000000/);
    expect(head).toContain(`Seccomp: ${me.seccomp}`);
    expect(cgroup).toBe(me.cgroup);
  });

  it("sees only the agent's processes in /proc", async () => {
    const me = await ask('ex1', { op: 'whoami' });
    const r = await exec('ex1', { command: 'ls /proc | grep -E "^[0-9]+$" | sort -n | tr "\\n" " "' });
    const seen = String(r.stdout).trim().split(' ').map(Number);
    // clove-init (1), the agent (2), and the command's own processes: nothing of the host.
    for (const p of me.pids as number[]) expect(seen).toContain(p);
    expect(seen).toContain(1);
    expect(seen.length).toBeLessThan((me.pids as number[]).length + 6);
    expect(Math.max(...seen)).toBeLessThan(1000);
  });

  it("shares the agent's private /tmp", async () => {
    const file = `/tmp/agent-note-${process.pid}.txt`;
    await ask('ex1', { op: 'write', path: file, content: 'written by the agent' });
    expect(fs.existsSync(file)).toBe(false); // not the host's /tmp
    expect(await exec('ex1', { argv: ['cat', file] })).toMatchObject({
      success: true,
      stdout: 'written by the agent',
    });
  });
});

/** Host pids whose command line matches `re` (pgrep -f). */
function pgrep(re: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', re], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return []; // exit 1: none
  }
}

describe('EXEC timeouts and runaway commands', () => {
  it('a command that never ends is killed at its timeout, with all its children', async () => {
    const tag = `${process.pid}${Date.now() % 10000}`;
    const t0 = Date.now();
    // Children of every kind: a background job, one that left the session, an orphaned grandchild.
    const r = await sdkExec(
      'ex1',
      `sleep 1${tag}1 & setsid sleep 1${tag}2 & (sleep 1${tag}3 &) ; sleep 1${tag}4`,
      undefined,
      1,
    );
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(r).toMatchObject({ success: false, exit_code: -1, signal: 'SIGKILL', timed_out: true });
    await new Promise((res) => setTimeout(res, 300));
    expect(pgrep(`sleep 1${tag}`)).toEqual([]);
  });

  it('the timeout is capped by max_exec_time_ms', async () => {
    await spawnAgent('ex-short', { permissions: { max_exec_time_ms: 800 } });
    const t0 = Date.now();
    const r = await exec('ex-short', { command: 'sleep 5', timeout: 30 });
    expect(r).toMatchObject({ timed_out: true, exit_code: -1 });
    expect(Date.now() - t0).toBeLessThan(3000);
    await op.kill('ex-short', { wait: true });
  });

  it('a long EXEC does not block the kernel', async () => {
    const pending = exec('ex1', { command: 'sleep 2; echo late' });
    const t0 = Date.now();
    await op.hello();
    expect(Date.now() - t0).toBeLessThan(500);
    expect(await pending).toMatchObject({ stdout: 'late\n' });
  });

  it("a fork bomb stops at the agent's pids limit; the kernel keeps serving", async () => {
    await spawnAgent('ex-bomb', { limits: { max_pids: 24 } });
    // The shell starts the bomb in a subshell (its one fork, before the limit fills), then becomes
    // `sleep` (exec: no fork needed once the limit is full) until the timeout.
    const pending = exec('ex-bomb', { command: 'b(){ b | b & }; (b) & exec sleep 30', timeout: 3 });
    await new Promise((res) => setTimeout(res, 1500));
    // An operator connects and says HELLO while the bomb runs.
    const t0 = Date.now();
    const fresh = await tk.client();
    expect(await fresh.hello()).toMatchObject({ success: true, role: 'operator' });
    expect(Date.now() - t0).toBeLessThan(1000);
    // The bomb is held at the agent's limit: its cgroup counts pids.max, init and agent included.
    const id = (await op.list()).find((a) => a.name === 'ex-bomb')!.id;
    const m = JSON.stringify(await op.agentMetrics(id));
    const current = /"pids":\{"current":(\d+),"max":(\d+)/.exec(m);
    if (current) expect(Number(current[1])).toBeLessThanOrEqual(Number(current[2]));
    const r = await pending;
    expect(r, JSON.stringify(r)).toMatchObject({ success: false, exit_code: -1, timed_out: true });
    // Nothing of the bomb is left: the agent sees itself and its init again, and works.
    await new Promise((res) => setTimeout(res, 300));
    const me = await ask('ex-bomb', { op: 'whoami' });
    expect((me.pids as number[]).length).toBeLessThanOrEqual(3);
    expect(await exec('ex-bomb', { command: 'echo alive' })).toMatchObject({ stdout: 'alive\n' });
    await op.kill('ex-bomb', { wait: true });
  });

  it('what the command left in its process group ends with it', async () => {
    const tag = `${process.pid}${(Date.now() + 7) % 10000}`;
    const r = await exec('ex1', { command: `sleep 2${tag} > /dev/null 2>&1 & echo started` });
    expect(r).toMatchObject({ success: true, stdout: 'started\n' });
    await new Promise((res) => setTimeout(res, 300));
    expect(pgrep(`sleep 2${tag}`)).toEqual([]);
  });
});

describe('EXEC policy: shells, allow lists, blocked programs, cwd', () => {
  it('cwd is never pasted into a shell', async () => {
    const r = await sdkExec('ex1', 'ls', '/tmp; touch /tmp/pwned');
    expect(r).toMatchObject({ success: false, code: 'not_found', exit_code: -1 });
    expect(await exec('ex1', { argv: ['ls', '/tmp/pwned'] })).toMatchObject({ success: false });
    expect(await exec('ex1', { argv: ['true'], cwd: '/etc/passwd' })).toMatchObject({
      code: 'invalid_request',
    });
  });

  it('with an allow list, the shell is not allowed and command is split (refused when it needs a shell)', async () => {
    await spawnAgent('ex-ls', { permissions: { exec: ['ls'] } });
    // Plain words: split, no shell, the resolved program is /usr/bin/ls.
    const ok = await exec('ex-ls', { command: "ls -d '/tmp'" });
    expect(ok).toMatchObject({ success: true, stdout: '/tmp\n', shell: false });
    for (const command of [
      'ls; touch /tmp/pwned',
      'x; rm -rf /tmp/x; ls',
      'ls && touch /tmp/pwned',
      'ls | sh',
      'ls $(touch /tmp/pwned)',
      'ls `touch /tmp/pwned`',
      'ls > /tmp/pwned',
      'FOO=1 ls',
      'ls "$(touch /tmp/pwned)"',
      "ls 'unterminated",
    ]) {
      const r = await exec('ex-ls', { command });
      expect(r, command).toMatchObject({ success: false, code: 'permission_denied', exit_code: -1 });
    }
    // Other programs, whatever their spelling: refused.
    for (const argv of [
      ['cat', '/etc/hostname'],
      ['sh', '-c', 'ls'],
      ['/bin/sh', '-c', 'ls'],
    ]) {
      expect(await exec('ex-ls', { argv }), argv.join(' ')).toMatchObject({ code: 'permission_denied' });
    }
    expect(await exec('ex-ls', { command: 'cat /etc/hostname' })).toMatchObject({
      code: 'permission_denied',
    });
    // An `ls` of the agent's own is not the allowed ls: by path, or found first in PATH.
    await ask('ex-ls', { op: 'write', path: '/tmp/ls', content: '#!/bin/sh\necho pwned\n', mode: '755' });
    expect(await exec('ex-ls', { argv: ['/tmp/ls'] })).toMatchObject({ code: 'permission_denied' });
    expect(await exec('ex-ls', { command: 'ls', env: { PATH: '/tmp:/usr/bin:/bin' } })).toMatchObject({
      code: 'permission_denied',
    });
    // Nothing of the attempts happened.
    const tmp = await exec('ex-ls', { argv: ['ls', '/tmp'] });
    expect(tmp.success).toBe(true);
    expect(String(tmp.stdout).split('\n')).toContain('ls');
    expect(String(tmp.stdout)).not.toContain('pwned');
    await op.kill('ex-ls', { wait: true });
  });

  it('an allow list naming the shell allows it', async () => {
    await spawnAgent('ex-sh', { permissions: { exec: ['sh'] } });
    expect(await exec('ex-sh', { command: 'echo a | tr a b' })).toMatchObject({ stdout: 'b\n', shell: true });
    await op.kill('ex-sh', { wait: true });
  });

  it('blocked_commands match programs by real path or name, and `*` blocks EXEC', async () => {
    await spawnAgent('ex-block', { permissions: { blocked_commands: ['cat', 'rm -rf /'] } });
    for (const argv of [
      ['cat', '/etc/hostname'],
      ['/usr/bin/cat', '/etc/hostname'],
      ['/bin/cat', '/etc/hostname'],
    ])
      expect(await exec('ex-block', { argv }), argv[0]).toMatchObject({ code: 'permission_denied' });
    expect(await exec('ex-block', { argv: ['rm', '-rf', '/'] })).toMatchObject({ code: 'permission_denied' });
    // Other arguments of rm are not blocked (the entry names an argv prefix).
    expect(await exec('ex-block', { argv: ['rm', '-f', '/tmp/nothing-here'] })).toMatchObject({
      success: true,
    });
    await op.kill('ex-block', { wait: true });
    await spawnAgent('ex-none', { permissions: { blocked_commands: ['*'] } });
    expect(await exec('ex-none', { argv: ['true'] })).toMatchObject({ code: 'permission_denied' });
    await op.kill('ex-none', { wait: true });
  });

  it("an agent running as the kernel's uid needs can_exec and an allow list", async () => {
    const r = await op.spawn({
      name: 'ex-plain',
      script: path.join(scripts, 'exec_agent.py'),
      restart_policy: 'never',
      sandboxed: false,
    });
    expect(r.id).toBeGreaterThan(0);
    await ask('ex-plain', { op: 'whoami' });
    expect(await exec('ex-plain', { command: 'echo hi' })).toMatchObject({ code: 'permission_denied' });
    await op.kill('ex-plain', { wait: true });
  });

  it("an operator's EXEC runs as the kernel's uid, outside any agent", async () => {
    const r = await op.exec({ command: 'id -u', async: false });
    expect(r).toMatchObject({ success: true, stdout: `${process.geteuid?.()}\n` });
  });
});
