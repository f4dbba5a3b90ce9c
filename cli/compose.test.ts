/**
 * The compose-style commands driven as a user would: `node bin/clove.js …` (needs `npm run build`) in a
 * temp dir holding a clove.yaml and tiny Python agents, against a kernel `up -d` starts in the
 * background (its own socket and data dir), or one `up` runs in its own process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startKernelProcess, tempDir, until } from '../harness/kernel.js';

const bin = path.join(REPO_ROOT, 'bin', 'clove.js');

interface Run {
  code: number;
  out: string;
  err: string;
}

/** Where a project lives: its dir (cwd of every command), socket and data dir. */
interface Proj {
  dir: string;
  sock: string;
  data: string;
}

function clove(p: Proj, ...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, '--socket', p.sock, '--data-dir', p.data, ...args],
      { cwd: p.dir, timeout: 180_000 },
      (e, out, err) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    );
  });
}

/** An agent: says HELLO (after `HELLO_DELAY` s), prints `ready <role> <time>` and waits for messages. */
const AGENT = [
  'import os, time',
  'from clove_sdk import CloveClient',
  'time.sleep(float(os.environ.get("HELLO_DELAY", "0")))',
  'c = CloveClient()',
  'c.hello()',
  'print("ready", os.environ.get("ROLE", "?"), repr(time.time()), flush=True)',
  'while True:',
  '    c.wait_message(timeout=30)',
].join('\n');

function yaml(workerRole = 'worker'): string {
  return [
    'name: demo',
    'agents:',
    '  db:',
    '    script: agent.py',
    '    env: {ROLE: db, HELLO_DELAY: "1"}',
    '    restart_policy: always',
    '  workers:',
    '    script: agent.py',
    '    replicas: 3',
    `    env: {ROLE: ${workerRole}}`,
    '    restart_policy: on-failure',
    '    depends_on:',
    '      db: {condition: healthy}',
    '',
  ].join('\n');
}

function project(): Proj {
  const dir = tempDir('clvc');
  fs.writeFileSync(path.join(dir, 'agent.py'), AGENT);
  fs.writeFileSync(path.join(dir, 'clove.yaml'), yaml());
  return { dir, sock: path.join(dir, 'k.sock'), data: path.join(dir, 'data') };
}

interface Ps {
  id: number;
  name: string;
  service: string | null;
  replica: number | null;
  state: string;
  pid: number;
  labels: Record<string, string>;
}

async function ps(p: Proj): Promise<Ps[]> {
  const r = await clove(p, 'ps', '--json');
  expect(r.code, r.err).toBe(0);
  return JSON.parse(r.out) as Ps[];
}

/** Every pid of a process whose command line mentions `s` (a scan of /proc). */
function pidsMentioning(s: string): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(s)) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

describe('clove up -d / ps / scale / restart / status / down', () => {
  const p = project();
  let kernelPid = 0;

  beforeAll(async () => {
    const up = await clove(p, 'up', '-d');
    expect(up.code, up.err + up.out).toBe(0);
    expect(up.out).toMatch(/project demo is up/);
    kernelPid = JSON.parse(fs.readFileSync(path.join(p.data, 'compose', 'demo.json'), 'utf8')).kernel.pid;
  }, 180_000);

  afterAll(async () => {
    await clove(p, 'down', '--timeout', '2');
    if (kernelPid && alive(kernelPid)) process.kill(kernelPid, 'SIGKILL');
  });

  it('up -d starts every replica with its labels; depends_on healthy starts workers after db said HELLO', async () => {
    const agents = await ps(p);
    expect(agents.map((a) => a.name).sort()).toEqual(['db', 'workers-1', 'workers-2', 'workers-3']);
    for (const a of agents) {
      expect(a.state).toBe('RUNNING');
      expect(a.labels['clove.project']).toBe('demo');
      expect(a.labels['clove.service']).toBe(a.service);
      expect(a.labels['clove.config-hash']).toMatch(/\w/);
    }
    expect(agents.find((a) => a.name === 'workers-2')!.labels['clove.replica']).toBe('2');
    expect(agents.find((a) => a.name === 'db')!.labels['clove.replica']).toBeUndefined();
    // db says HELLO a second after it starts; the workers start only after that.
    const times = async (name: string) => {
      const log = path.join(p.data, 'logs', `${name}.log`);
      const line = await until(
        () => fs.existsSync(log) && /ready \S+ ([\d.]+)/.exec(fs.readFileSync(log, 'utf8')),
        30_000,
        `${name} ready`,
      );
      return Number(line[1]);
    };
    const dbReady = await times('db');
    for (const w of ['workers-1', 'workers-2', 'workers-3'])
      expect(await times(w)).toBeGreaterThanOrEqual(dbReady);
  });

  it('status --json: reachable, the kernel pid, the project with its services', async () => {
    const r = await clove(p, 'status', '--json');
    expect(r.code, r.err).toBe(0);
    const s = JSON.parse(r.out);
    expect(s).toMatchObject({ reachable: true, pid: kernelPid, socket: p.sock, data_dir: p.data });
    expect(s.projects).toEqual([
      {
        name: 'demo',
        services: expect.arrayContaining([
          { name: 'db', replicas: 1, running: 1 },
          { name: 'workers', replicas: 3, running: 3 },
        ]),
      },
    ]);
  });

  it('scale workers=10 then workers=2: replicas 1 and 2 remain; scale of a single service is a usage error', async () => {
    const up = await clove(p, 'scale', 'workers=10');
    expect(up.code, up.err).toBe(0);
    let names = (await ps(p)).filter((a) => a.service === 'workers').map((a) => a.name);
    expect(names).toHaveLength(10);
    const before = new Map((await ps(p)).map((a) => [a.name, a.id]));
    const down = await clove(p, 'scale', 'workers=2');
    expect(down.code, down.err).toBe(0);
    const after = (await ps(p)).filter((a) => a.service === 'workers');
    names = after.map((a) => a.name).sort();
    expect(names).toEqual(['workers-1', 'workers-2']);
    // The same agents, not new ones.
    for (const a of after) expect(a.id).toBe(before.get(a.name));
    const bad = await clove(p, 'scale', 'db=2');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/db is not replicated/);
    expect((await clove(p, 'scale', 'nope=2')).code).toBe(2);
    // Back to what the file says.
    expect((await clove(p, 'up', '-d')).code).toBe(0);
  }, 120_000);

  it('restart workers-1: the same agent, a new pid', async () => {
    const before = (await ps(p)).find((a) => a.name === 'workers-1')!;
    const r = await clove(p, 'restart', 'workers-1');
    expect(r.code, r.err).toBe(0);
    const after = await until(async () => {
      const a = (await ps(p)).find((x) => x.name === 'workers-1');
      return a && a.state === 'RUNNING' && a.pid !== before.pid ? a : null;
    }, 30_000);
    expect(after.id).toBe(before.id);
    expect(alive(before.pid)).toBe(false);
    expect((await clove(p, 'restart', 'ghost')).code).toBe(7);
  });

  it('a second up after editing one service recreates only that service', async () => {
    const before = new Map((await ps(p)).map((a) => [a.name, a]));
    fs.writeFileSync(path.join(p.dir, 'clove.yaml'), yaml('worker-v2'));
    const r = await clove(p, 'up', '-d');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/db is up to date/);
    expect(r.out).toMatch(/recreated workers-1/);
    const after = await ps(p);
    expect(after.find((a) => a.name === 'db')!.pid).toBe(before.get('db')!.pid);
    for (const w of ['workers-1', 'workers-2', 'workers-3']) {
      const a = after.find((x) => x.name === w)!;
      expect(a.pid).not.toBe(before.get(w)!.pid);
      expect(a.labels['clove.config-hash']).not.toBe(before.get(w)!.labels['clove.config-hash']);
    }
    // Nothing changed: nothing is recreated.
    const again = await clove(p, 'up', '-d');
    expect(again.out).not.toMatch(/recreated|started /);
  }, 120_000);

  it('down returns 0 and leaves no agent and no kernel process', async () => {
    const pids = (await ps(p)).map((a) => a.pid);
    expect(pids.length).toBeGreaterThan(0);
    expect(alive(kernelPid)).toBe(true);
    const r = await clove(p, 'down');
    expect(r.code, r.err).toBe(0);
    for (const pid of [...pids, kernelPid]) expect(alive(pid)).toBe(false);
    expect(pidsMentioning(p.sock)).toEqual([]);
    expect(pidsMentioning(path.join(p.dir, 'agent.py'))).toEqual([]);
    expect(fs.existsSync(path.join(p.data, 'compose', 'demo.json'))).toBe(false);
    expect((await clove(p, 'down')).code).toBe(0);
    expect((await clove(p, 'status', '--json')).code).toBe(6);
  }, 60_000);
});

describe('clove up in the foreground', () => {
  it('runs the kernel in this process, prints name-prefixed agent logs; SIGINT stops everything, exit 0', async () => {
    const p = project();
    const child = spawn(process.execPath, [bin, '--socket', p.sock, '--data-dir', p.data, 'up'], {
      cwd: p.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await until(
      () => /^db\s+\| ready db/m.test(out) && /^workers-3\s+\| ready worker/m.test(out),
      90_000,
      'logs',
    );
    const pids = (await ps(p)).map((a) => a.pid);
    expect(pids).toHaveLength(4);
    child.kill('SIGINT');
    expect(await exited, err).toBe(0);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(fs.existsSync(p.sock)).toBe(false);
  }, 120_000);
});

describe('clove up against a kernel that already runs', () => {
  it('follows the logs; SIGINT stops the project agents but not the kernel', async () => {
    const p = project();
    const kp = await startKernelProcess({
      socketPath: p.sock,
      dataDir: p.data,
      extra: ['--log-level', 'error'],
    });
    try {
      const child = spawn(process.execPath, [bin, '--socket', p.sock, 'up'], {
        cwd: p.dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      await until(
        () => /is up: Ctrl-C/.test(out) && /^workers-3\s+\| ready worker/m.test(out),
        90_000,
        'logs',
      );
      expect(err).not.toMatch(/starting a kernel/);
      const pids = (await ps(p)).map((a) => a.pid);
      expect(pids).toHaveLength(4);
      child.kill('SIGINT');
      expect(await exited, err).toBe(0);
      expect(out).toMatch(/stopped project demo/);
      for (const pid of pids) expect(alive(pid)).toBe(false);
      expect(await ps(p)).toEqual([]);
      expect(alive(kp.child.pid!)).toBe(true);
    } finally {
      await kp.stop();
    }
  }, 120_000);
});

describe('clove config', () => {
  it('--schema prints a JSON Schema; a valid file prints the project; -q only validates', async () => {
    const p = project();
    const schema = await clove(p, 'config', '--schema');
    expect(schema.code).toBe(0);
    expect(JSON.parse(schema.out)).toMatchObject({ $schema: expect.stringContaining('json-schema.org') });
    const json = await clove(p, 'config', '--json');
    expect(json.code, json.err).toBe(0);
    const cfg = JSON.parse(json.out);
    expect(Object.keys(cfg.services)).toEqual(['db', 'workers']); // in start order
    expect(cfg).toMatchObject({
      name: 'demo',
      services: {
        db: { replicas: 1, agents: ['db'], spawn: { restart_policy: 'always' } },
        workers: {
          replicas: 3,
          agents: ['workers-1', 'workers-2', 'workers-3'],
          depends_on: { db: { condition: 'healthy' } },
        },
      },
    });
    expect((await clove(p, 'config', '-q')).out).toBe('');
  });

  it('a malformed clove.yaml: exit 8, stderr names the line and the field', async () => {
    const p = project();
    fs.writeFileSync(
      path.join(p.dir, 'clove.yaml'),
      ['name: demo', 'agents:', '  workers:', '    script: agent.py', '    replicas: many', ''].join('\n'),
    );
    for (const cmd of [['config'], ['up', '-d']]) {
      const r = await clove(p, ...cmd);
      expect(r.code).toBe(8);
      expect(r.err).toMatch(/clove\.yaml:5:\d+: agents\.workers\.replicas: /);
    }
    expect(fs.existsSync(p.sock)).toBe(false);
    fs.rmSync(path.join(p.dir, 'clove.yaml'));
    const none = await clove(p, 'config', '-f', path.join(p.dir, 'missing.yaml'));
    expect(none.code).toBe(8);
    expect(none.err).toMatch(/missing\.yaml/);
  });
});

describe('healthchecks, a failed start, two projects on one kernel', () => {
  const p = project();
  let kernelPid = 0;
  afterAll(async () => {
    await clove(p, 'down', '-f', 'bad.yaml', '--timeout', '2');
    await clove(p, 'down', '--timeout', '2');
    if (kernelPid && alive(kernelPid)) process.kill(kernelPid, 'SIGKILL');
  });

  it('depends_on healthy waits for the healthcheck (run by the CLI) to pass', async () => {
    const log = path.join(p.data, 'logs', 'db.log');
    fs.writeFileSync(
      path.join(p.dir, 'clove.yaml'),
      [
        'name: hc',
        'agents:',
        '  db:',
        '    script: agent.py',
        '    env: {ROLE: db, HELLO_DELAY: "1"}',
        '    healthcheck:',
        `      test: ["CMD", "grep", "-q", "ready db", "${log}"]`,
        '      interval: 0.2',
        '      retries: 100',
        '  web:',
        '    script: agent.py',
        '    env: {ROLE: web}',
        '    depends_on:',
        '      db: {condition: healthy}',
        '',
      ].join('\n'),
    );
    const up = await clove(p, 'up', '-d');
    expect(up.code, up.err).toBe(0);
    kernelPid = JSON.parse(fs.readFileSync(path.join(p.data, 'compose', 'hc.json'), 'utf8')).kernel.pid;
    const t = (name: string) =>
      Number(
        /ready \S+ ([\d.]+)/.exec(fs.readFileSync(path.join(p.data, 'logs', `${name}.log`), 'utf8'))![1],
      );
    const webLog = path.join(p.data, 'logs', 'web.log');
    await until(
      () => fs.existsSync(webLog) && fs.readFileSync(webLog, 'utf8').includes('ready'),
      30_000,
      'web',
    );
    expect(t('web')).toBeGreaterThanOrEqual(t('db'));
  }, 120_000);

  it('an agent that exits at start: up -d exits 9 with its last log lines; down of that project keeps the kernel', async () => {
    fs.writeFileSync(
      path.join(p.dir, 'crash.py'),
      'import sys\nprint("boom: no API key", flush=True)\nsys.exit(3)\n',
    );
    fs.writeFileSync(
      path.join(p.dir, 'bad.yaml'),
      ['name: bad', 'agents:', '  crash:', '    script: crash.py', ''].join('\n'),
    );
    const up = await clove(p, 'up', '-d', '-f', 'bad.yaml');
    expect(up.code).toBe(9);
    expect(up.err).toMatch(/crash exited with code 3/);
    expect(up.err).toMatch(/boom: no API key/);
    const down = await clove(p, 'down', '-f', 'bad.yaml');
    expect(down.code, down.err).toBe(0);
    // The kernel `up -d` started for project hc keeps running while hc's agents do.
    expect(alive(kernelPid)).toBe(true);
    expect((await ps(p)).map((a) => a.name).sort()).toEqual(['db', 'web']);
    const restart = await clove(p, 'restart', '*b');
    expect(restart.out).toMatch(/restarted db/);
    expect(restart.out).toMatch(/restarted web/);
    expect((await clove(p, 'down')).code).toBe(0);
    expect(alive(kernelPid)).toBe(false);
  }, 120_000);
});
