/**
 * The `clove` command against a real kernel process: the commands work and their exit codes are the
 * documented ones (docs/cli.md).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT, startKernelProcess, tempDir, until, type KernelProcess } from '../harness/kernel.js';

const bin = path.join(REPO_ROOT, 'bin', 'clove.js');
let kp: KernelProcess;
let agent: string;

function clove(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, '--socket', kp.socketPath, ...args], (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    );
  });
}

beforeAll(async () => {
  kp = await startKernelProcess({ extra: ['--log-level', 'error'] });
  agent = path.join(tempDir(), 'talker.py');
  fs.writeFileSync(
    agent,
    [
      'from clove_sdk import CloveClient',
      'c = CloveClient()',
      'print("talker ready", flush=True)',
      'while True:',
      '    m = c.wait_message(timeout=30)',
      '    if m: print("got", m["message"], flush=True)',
    ].join('\n'),
  );
});
afterAll(async () => kp?.stop());

describe('clove CLI', () => {
  it('run, ps, send, logs, kill', async () => {
    const run = await clove('run', agent, '--name', 'talker', '--restart', 'on-failure');
    expect(run.code).toBe(0);
    expect(run.out).toMatch(/^talker \(id \d+, pid \d+\)/);
    const ps = await clove('ps');
    expect(ps.out).toMatch(/talker\s+-\s+RUNNING/);
    const json = JSON.parse((await clove('ps', '--json')).out);
    expect(json[0]).toMatchObject({ name: 'talker', state: 'RUNNING', restart_policy: 'on-failure' });
    // A sandboxed agent that restarts on failure gets a spare sandbox a second after it started: WARM says so.
    expect(json[0].spare).toEqual(expect.objectContaining({ ready: expect.any(Boolean) }));
    await until(
      async () => JSON.parse((await clove('ps', '--json')).out)[0]?.spare?.ready === true,
      10_000,
      'spare ready',
    );
    expect((await clove('ps')).out).toMatch(/talker\s.*\sspare\s*$/m);
    expect((await clove('send', 'talker', '{"hello":"world"}')).code).toBe(0);
    await until(
      async () => (await clove('logs', 'talker')).out.includes("got {'hello': 'world'}"),
      10_000,
      'log line',
    );
    expect((await clove('logs', 'talker', '-n', '1')).out.trim()).toBe("got {'hello': 'world'}");
    expect((await clove('kill', 'talker')).code).toBe(0);
    expect((await clove('ps', '--json')).out.trim()).toBe('[]');
  });

  it('run --no-sandbox: a plain process with the kernel uid, from a directory only its owner can enter', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clv-cli-'));
    fs.copyFileSync(agent, path.join(dir, 'talker.py'));
    const run = await clove(
      'run',
      path.join(dir, 'talker.py'),
      '--name',
      'plain-talker',
      '--no-sandbox',
      '--json',
    );
    expect(run.code, run.err).toBe(0);
    expect(JSON.parse(run.out).isolation.namespaces.pid).toBe(false);
    await until(
      async () => (await clove('logs', 'plain-talker')).out.includes('talker ready'),
      10_000,
      'ready',
    );
    expect((await clove('kill', 'plain-talker')).code).toBe(0);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('exec, perms, audit', async () => {
    const hi = await clove('exec', '--', 'sh', '-c', 'echo hi; echo err >&2');
    expect([hi.code, hi.out, hi.err]).toEqual([0, 'hi\n', 'err\n']);
    expect((await clove('exec', '--', 'sh', '-c', 'exit 3')).code).toBe(1);
    expect((await clove('run', agent, '--name', 'perm-target')).code).toBe(0);
    const shown = await clove('perms', 'perm-target');
    expect(shown.out).toMatch(/^perm-target \(id \d+\): standard/);
    const set = await clove('perms', 'perm-target', '--set', 'readonly', '--json');
    expect(JSON.parse(set.out)).toMatchObject({ level: 'readonly', permissions: { can_write: false } });
    const audit = await clove('audit', '--category', 'AGENT_LIFECYCLE', '--agent', 'perm-target', '--json');
    expect(audit.code).toBe(0);
    expect(JSON.parse(audit.out)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ event_type: 'AGENT_SPAWNED', agent_name: 'perm-target' }),
      ]),
    );
    expect((await clove('perms', 'ghost')).code).toBe(7);
    expect((await clove('kill', 'perm-target')).code).toBe(0);
  });

  it('exit codes: 7 no such agent, 2 usage, 1 refused, 6 unreachable', async () => {
    expect((await clove('kill', 'ghost')).code).toBe(7);
    expect((await clove('logs', 'ghost')).code).toBe(7);
    expect((await clove('frobnicate')).code).toBe(2);
    expect((await clove('run', '/does/not/exist.py')).code).toBe(1);
    const r = await new Promise<number>((resolve) =>
      execFile(process.execPath, [bin, '--socket', '/tmp/nowhere.sock', 'ps'], (e) =>
        resolve((e as { code?: number } | null)?.code ?? 0),
      ),
    );
    expect(r).toBe(6);
  });

  it('kernel --fast-path-poll-us: not a number is a usage error, out of range the kernel refuses; both exit 2', async () => {
    const dir = tempDir();
    const kernel = (v: string) =>
      new Promise<{ code: number; err: string }>((resolve) =>
        execFile(
          process.execPath,
          [
            bin,
            '--socket',
            path.join(dir, 'k.sock'),
            'kernel',
            '--data-dir',
            dir,
            '--fast-path',
            '--fast-path-poll-us',
            v,
          ],
          (e, _out, err) => resolve({ code: (e as { code?: number } | null)?.code ?? 0, err }),
        ),
      );
    const word = await kernel('soon');
    expect(word.code).toBe(2);
    expect(word.err).toMatch(/--fast-path-poll-us.*must be a non-negative integer/);
    const big = await kernel('5000');
    expect(big.code).toBe(2);
    expect(big.err).toMatch(/invalid --fast-path-poll-us 5000 .*from 0 \(never poll\) to 1000/);
    expect(fs.existsSync(path.join(dir, 'k.sock'))).toBe(false);
  });
});

describe('clove kernel shutdown', () => {
  it('SIGTERM to its whole process group (Ctrl-C, timeout) stops agents once, removes sockets, exits 0', async () => {
    const { spawn } = await import('node:child_process');
    const dir = tempDir();
    const sock = path.join(dir, 'k.sock');
    const data = path.join(dir, 'data');
    const child = spawn(
      process.execPath,
      [bin, '--socket', sock, 'kernel', '--data-dir', data, '--log-level', 'error'],
      {
        detached: true,
        stdio: 'ignore',
      },
    );
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const { waitForSocket } = await import('../harness/kernel.js');
    await waitForSocket(sock, 15_000);
    const { CloveClient } = await import('../sdk/typescript/client.js');
    const c = await CloveClient.connect({ socketPath: sock, reconnect: false });
    const pids: number[] = [];
    for (let i = 0; i < 3; i++)
      pids.push((await c.spawn({ name: `t${i}`, script: agent, restart_policy: 'always' })).pid);
    c.close();
    process.kill(-child.pid!, 'SIGTERM');
    expect(await exited).toBe(0);
    expect(fs.existsSync(sock)).toBe(false);
    expect(fs.existsSync(path.join(data, 'run', 'agent.sock'))).toBe(false);
    for (const p of pids) expect(fs.existsSync(`/proc/${p}`)).toBe(false);
    for (let i = 0; i < 3; i++)
      expect(fs.readFileSync(path.join(data, 'logs', `t${i}.log`), 'utf8')).not.toMatch(/restarting/);
  });

  it('clove up twice on the same data dir: the second run finds the restored workers up to date, no error', async () => {
    const { spawn } = await import('node:child_process');
    const { waitForSocket } = await import('../harness/kernel.js');
    const { CloveClient } = await import('../sdk/typescript/client.js');
    const dir = tempDir();
    const sock = path.join(dir, 'k.sock');
    const data = path.join(dir, 'data');
    fs.copyFileSync(agent, path.join(dir, 'talker.py'));
    fs.writeFileSync(
      path.join(dir, 'clove.yaml'),
      [
        'name: twice',
        'agents:',
        '  worker:',
        '    script: talker.py',
        '    replicas: 2',
        '    restart_policy: always',
        '',
      ].join('\n'),
    );
    for (let run = 0; run < 2; run++) {
      let err = '';
      let out = '';
      const child = spawn(process.execPath, [bin, '--socket', sock, '--data-dir', data, 'up'], {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      await waitForSocket(sock, 15_000);
      const c = await CloveClient.connect({ socketPath: sock, reconnect: false });
      const names = await until(async () => {
        const l = (await c.list()).filter((a) => a.state === 'RUNNING').map((a) => a.name);
        return err.includes('is up') && l.length === 2 ? l.sort() : null;
      }, 30_000);
      c.close();
      expect(names).toEqual(['worker-1', 'worker-2']);
      expect(err).not.toMatch(/name_taken|clove: (?!using|starting)/);
      if (run === 1) expect(out).toMatch(/worker-1 is up to date/);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  });

  it('--log-format: pretty is one human-readable line per entry, json (and auto off a terminal) JSON lines', async () => {
    const { spawn } = await import('node:child_process');
    const dir = tempDir();
    for (const format of ['pretty', 'json', 'auto']) {
      const child = spawn(
        process.execPath,
        [
          bin,
          '--socket',
          path.join(dir, `${format}.sock`),
          '--data-dir',
          path.join(dir, format),
          'kernel',
          '--log-format',
          format,
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let err = '';
      child.stderr!.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      const line = await until(
        () => err.split('\n').find((l) => l.includes('clove kernel ready')),
        30_000,
        'ready',
      );
      if (format === 'pretty') {
        expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: clove kernel ready \{.*"socket"/);
      } else {
        expect(JSON.parse(line)).toMatchObject({ level: 30, msg: 'clove kernel ready' });
      }
      // The shutdown itself is tested above (a signal right after `ready` may precede the kernel's handler).
      child.kill('SIGTERM');
      await exited;
    }
  });
});
