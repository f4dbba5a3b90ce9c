/**
 * `clove logs` against a real kernel process and real agents: pattern selection, the `name | ` prefix,
 * --tail, exit 7, and a running `-f` that picks up a new agent and never splits a line.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startKernelProcess, tempDir, until, type KernelProcess } from '../../harness/kernel.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { selectAgents, splitLines, type Listed } from './logs.js';

const bin = path.join(REPO_ROOT, 'bin', 'clove.js');
let kp: KernelProcess;
let c: CloveClient;
let script: string;

function clove(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, '--socket', kp.socketPath, ...args], (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    );
  });
}

/** Spawns an agent and waits until its five startup lines are in its log. */
async function agent(name: string, labels?: Record<string, string>): Promise<void> {
  await c.spawn({ name, script, args: [name], ...(labels ? { labels } : {}) });
  const file = path.join(kp.dataDir, 'logs', `${name}.log`);
  await until(
    () => fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes(`${name} line 5\n`),
    20_000,
    name,
  );
}

beforeAll(async () => {
  kp = await startKernelProcess({ extra: ['--log-level', 'error'] });
  c = await kp.client();
  script = path.join(tempDir(), 'liner.py');
  fs.writeFileSync(
    script,
    [
      'import sys',
      'from clove_sdk import CloveClient',
      'name = sys.argv[1]',
      'c = CloveClient()',
      'for i in range(1, 6): print(f"{name} line {i}", flush=True)',
      'while True:',
      '    m = c.wait_message(timeout=30)',
      '    if not m: continue',
      '    if m["message"] == "partial": sys.stdout.write("part-one "); sys.stdout.flush()',
      '    elif m["message"] == "finish": sys.stdout.write("part-two\\n"); sys.stdout.flush()',
      '    else: print(f"{name} got {m[\'message\']}", flush=True)',
    ].join('\n'),
  );
  await agent('workers-1');
  await agent('workers-2');
  await agent('other', { 'clove.project': 'demo', 'clove.service': 'backend' });
}, 60_000);
afterAll(async () => kp?.stop());

describe('clove logs', () => {
  it("logs 'workers-*': only the matching agents, every line prefixed with its name, per-file order kept", async () => {
    const r = await clove('logs', 'workers-*');
    expect(r.code, r.err).toBe(0);
    const lines = r.out.trimEnd().split('\n');
    expect(lines).toHaveLength(10);
    for (const l of lines) expect(l).toMatch(/^workers-[12] \| workers-[12] line [1-5]$/);
    for (const w of ['workers-1', 'workers-2']) {
      expect(lines.filter((l) => l.startsWith(`${w} |`))).toEqual(
        [1, 2, 3, 4, 5].map((i) => `${w} | ${w} line ${i}`),
      );
    }
    expect(r.out).not.toContain('other');
    // Padded to the longest name: `other  | ` next to `workers-1 | `.
    const all = await clove('logs', '--no-color');
    expect(all.out).toContain('other     | other line 1\n');
    expect(all.out).toContain('workers-1 | workers-1 line 1\n');
  });

  it('a service name (label clove.service) selects its agents', async () => {
    const r = await clove('logs', '--tail', '1', 'backend', 'workers-2');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe('other     | other line 5\nworkers-2 | workers-2 line 5\n');
  });

  it('--tail 2 gives the last two lines of each agent; one agent named exactly has no prefix', async () => {
    const r = await clove('logs', '--tail', '2', 'workers-*');
    expect(r.out.trimEnd().split('\n').sort()).toEqual([
      'workers-1 | workers-1 line 4',
      'workers-1 | workers-1 line 5',
      'workers-2 | workers-2 line 4',
      'workers-2 | workers-2 line 5',
    ]);
    expect((await clove('logs', '-n', '1', 'other')).out).toBe('other line 5\n');
    expect((await clove('logs', '-n', '1', '--prefix', 'other')).out).toBe('other | other line 5\n');
    expect((await clove('logs', '-n', '1', '--no-prefix', 'workers-*')).out).toBe(
      'workers-1 line 5\nworkers-2 line 5\n',
    );
  });

  it('no match exits 7; a gone agent whose log remains is still shown by its exact name', async () => {
    const none = await clove('logs', 'nobody-*');
    expect(none.code).toBe(7);
    expect(none.err).toMatch(/no agent matches nobody-\*/);
    expect((await clove('logs', 'ghost')).code).toBe(7);
    await agent('gone');
    await c.kill('gone');
    await until(async () => !(await c.list()).some((a) => a.name === 'gone'), 20_000, 'gone gone');
    const r = await clove('logs', 'gone');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('gone line 5\n');
    // A reader that goes away early (`| head -1`) ends it quietly with exit 0 (more than a pipe holds).
    const big = Array.from({ length: 20_000 }, (_, i) => `big line ${i}\n`).join('');
    fs.writeFileSync(path.join(kp.dataDir, 'logs', 'big.log'), big);
    const head = await new Promise<{ code: number; out: string; err: string }>((resolve) =>
      execFile(
        'bash',
        [
          '-c',
          `"${process.execPath}" "${bin}" -s "${kp.socketPath}" logs big | head -1; exit \${PIPESTATUS[0]}`,
        ],
        (e, out, err) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
      ),
    );
    expect([head.code, head.out, head.err]).toEqual([0, 'big line 0\n', '']);
  });

  it('-f: a new matching agent joins the running follow, a line written in two pieces comes out whole, SIGINT exits 0', async () => {
    const child = spawn(
      process.execPath,
      [bin, '--socket', kp.socketPath, 'logs', '-f', '--tail', '1', 'workers-*'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await until(() => out.includes('workers-2 | workers-2 line 5\n'), 20_000, 'backlog');
      await agent('workers-3');
      await until(() => out.includes('workers-3 | workers-3 line 5\n'), 20_000, 'workers-3 in the follow');
      // workers-3 is new: its whole log is news, even with --tail 1.
      expect(out).toContain('workers-3 | workers-3 line 1\n');
      await c.send('workers-1', 'partial');
      const file = path.join(kp.dataDir, 'logs', 'workers-1.log');
      await until(() => fs.readFileSync(file, 'utf8').endsWith('part-one '), 20_000, 'the first piece');
      // Once a line of workers-2 written after the first piece is out, the follow has read that piece.
      await c.send('workers-2', 'tick');
      await until(() => out.includes('workers-2 | workers-2 got tick\n'), 20_000, 'tick');
      expect(out).not.toContain('part-one');
      await c.send('workers-1', 'finish');
      await until(() => out.includes('part-two'), 20_000, 'the second piece');
      expect(out).toContain('workers-1 | part-one part-two\n');
      expect(out).not.toContain('other');
    } finally {
      child.kill('SIGINT');
    }
    expect(await exited, err).toBe(0);
  });
});

describe('clove logs -f across a kernel restart', () => {
  it('keeps following while the kernel is away, then picks up the restored and the new agents', async () => {
    const dir = tempDir();
    const paths = { socketPath: path.join(dir, 'k.sock'), dataDir: path.join(dir, 'data') };
    let k = await startKernelProcess({ ...paths, extra: ['--log-level', 'error'] });
    const log = (name: string) => path.join(paths.dataDir, 'logs', `${name}.log`);
    const lines = (name: string) => (fs.existsSync(log(name)) ? fs.readFileSync(log(name), 'utf8') : '');
    const kc = await k.client();
    await kc.spawn({ name: 'svc-1', script, args: ['svc-1'], restart_policy: 'always' });
    await until(() => lines('svc-1').includes('svc-1 line 5'), 20_000, 'svc-1 up');
    const child = spawn(process.execPath, [bin, '--socket', paths.socketPath, 'logs', '-f', 'svc-*'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await until(() => out.includes('svc-1 | svc-1 line 5\n'), 20_000, 'backlog');
      expect((await k.stop()).code).toBe(0);
      await until(() => err.includes('cannot reach the kernel'), 20_000, 'the warning');
      expect(child.exitCode).toBeNull();
      k = await startKernelProcess({ ...paths, extra: ['--log-level', 'error'] });
      // svc-1 (restart: always) is back and writes its lines again, into the same file.
      await until(() => out.split('svc-1 | svc-1 line 5\n').length === 3, 30_000, 'svc-1 restored');
      await (await k.client()).spawn({ name: 'svc-2', script, args: ['svc-2'] });
      await until(() => out.includes('svc-2 | svc-2 line 5\n'), 30_000, 'svc-2 joins');
      expect(err).toContain('kernel reachable again');
    } finally {
      child.kill('SIGINT');
      await k.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(await exited, err).toBe(0);
  }, 120_000);
});

describe('logs selection (unit)', () => {
  const a = (id: number, name: string, labels?: Record<string, string>): Listed =>
    ({ id, name, labels, log_file: `/l/${name}.log` }) as Listed;
  const agents = [
    a(1, 'web-1', { 'clove.service': 'web' }),
    a(2, 'web-2', { 'clove.service': 'web' }),
    a(3, 'db', { 'clove.service': 'db' }),
    a(4, 'loner'),
    { ...a(5, 'nolog'), log_file: undefined },
  ];
  const names = (p: string[]) => selectAgents(agents, p).map((s) => s.name);

  it('names, globs, ids and service labels; agents without a log file are skipped', () => {
    expect(names([])).toEqual(['web-1', 'web-2', 'db', 'loner']);
    expect(names(['web'])).toEqual(['web-1', 'web-2']);
    expect(names(['w*-2', 'loner'])).toEqual(['web-2', 'loner']);
    expect(names(['3'])).toEqual(['db']);
    expect(names(['nolog'])).toEqual([]);
  });

  it('splitLines keeps the unfinished rest', () => {
    const { lines, rest } = splitLines(Buffer.from('a\nbé\n\nc'));
    expect(lines.map(String)).toEqual(['a', 'bé', '']);
    expect(String(rest)).toBe('c');
  });
});
