/**
 * `clove world …` against a real kernel process (docs/cli.md "Worlds"): a world from a YAML file, an
 * agent run in it, chaos injected and cleared, a snapshot written and restored, the world destroyed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startKernelProcess, tempDir, until, type KernelProcess } from '../harness/kernel.js';

const bin = path.join(REPO_ROOT, 'bin', 'clove.js');
let kp: KernelProcess;
let dir: string;

function clove(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, '--socket', kp.socketPath, ...args], (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    );
  });
}

beforeAll(async () => {
  kp = await startKernelProcess({ extra: ['--log-level', 'error'] });
  dir = tempDir('clvwc');
  fs.writeFileSync(
    path.join(dir, 'world.yaml'),
    [
      'name: cli world',
      'seed: 5',
      'virtual_filesystem:',
      '  initial_files:',
      '    /data/greeting.txt: hello from the world',
      'network:',
      '  mode: mock',
      '  mock_responses:',
      '    "https://api.test/*": {status: 200, body: mocked}',
      'chaos:',
      '  enabled: true',
    ].join('\n'),
  );
  // The agent prints what it reads, so that its log shows where its file came from.
  fs.writeFileSync(
    path.join(dir, 'reader.py'),
    [
      'import time',
      'from clove_sdk import CloveClient',
      'c = CloveClient()',
      'c.connect()',
      'print("read:", c.read_file("/data/greeting.txt")["content"], flush=True)',
      'while True:',
      '    time.sleep(1)',
    ].join('\n'),
  );
});
afterAll(async () => {
  await kp?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('clove world', () => {
  it('create -f, run --world, ls, state, event, snapshot -o, restore, destroy', async () => {
    const created = await clove('world', 'create', '-f', path.join(dir, 'world.yaml'), '--json');
    expect(created.code).toBe(0);
    const id = JSON.parse(created.out).world_id as string;
    expect(id).toMatch(/^cli-world-\d{4}$/);
    expect((await clove('run', path.join(dir, 'reader.py'), '--name', 'reader', '--world', id)).code).toBe(0);
    await until(
      async () => (await clove('logs', 'reader')).out.includes('read: hello from the world'),
      20_000,
    );
    const ls = await clove('world', 'ls');
    expect(ls.out).toMatch(new RegExp(`${id}\\s+cli world\\s+1\\s+`));
    const ev = await clove(
      'world',
      'event',
      id,
      'slow_io',
      '-p',
      'latency_ms=50',
      '-p',
      'duration_ms=600000',
    );
    expect(ev.out).toMatch(/slow_io #1/);
    const state = JSON.parse((await clove('world', 'state', id, '--json')).out);
    expect(state).toMatchObject({ seed: 5, agent_count: 1, chaos_metrics: { active_event_count: 1 } });
    expect((await clove('world', 'state', id)).out).toMatch(/#1 slow_io \{.*"latency_ms":50/);
    const snap = path.join(dir, 'snap.json');
    expect((await clove('world', 'snapshot', id, '-o', snap)).code).toBe(0);
    expect(JSON.parse(fs.readFileSync(snap, 'utf8'))).toMatchObject({ chaos: { seed: 5 } });
    expect((await clove('world', 'event', id, 'clear')).out).toMatch(/cleared 1/);
    // the reader is in the world: the restored copy leaves it out (never two worlds, never a ghost)
    const restored = await clove('world', 'restore', snap, '--id', 'cli-copy');
    expect(restored.out).toMatch(/^cli-copy: members restored \[\]/);
    expect(restored.out).toMatch(/left out: reader#/);
    expect((await clove('world', 'destroy', id)).code).not.toBe(0);
    expect((await clove('world', 'destroy', id, '--force')).code).toBe(0);
    expect((await clove('world', 'destroy', 'cli-copy')).code).toBe(0);
    expect((await clove('world', 'ls', '--json')).out.trim()).toBe('[]');
    await clove('kill', 'reader');
  });

  it('refuses a bad world file with exit 2 and a bad config with the kernel’s error', async () => {
    fs.writeFileSync(path.join(dir, 'bad.yaml'), 'name: [unclosed\n');
    const bad = await clove('world', 'create', '-f', path.join(dir, 'bad.yaml'));
    expect(bad.code).toBe(2);
    fs.writeFileSync(path.join(dir, 'wrong.yaml'), 'network:\n  mode: live\n');
    const wrong = await clove('world', 'create', '-f', path.join(dir, 'wrong.yaml'));
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(/network\.mode/);
    expect((await clove('world', 'state', 'nope-0001')).code).not.toBe(0);
  });
});
