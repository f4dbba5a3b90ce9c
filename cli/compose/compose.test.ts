import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  COMPOSE_FILES,
  composeLabels,
  findComposeFile,
  loadCompose,
  parseDuration,
  parseSize,
  replicaNames,
  type Project,
} from './index.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** A fresh project directory holding `files` (a `.py` mentioned as a script must exist: give it). */
function projectDir(files: Record<string, string>, name = 'proj'): string {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'clove-compose-')), name);
  dirs.push(path.dirname(dir));
  fs.mkdirSync(dir);
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), text);
  }
  return dir;
}

function load(yaml: string, extra: Record<string, string> = {}, env: NodeJS.ProcessEnv = {}): Project {
  const dir = projectDir({ 'clove.yaml': yaml, 'a.py': '', 'b.py': '', 'c.py': '', ...extra });
  return loadCompose(path.join(dir, 'clove.yaml'), { env });
}

const svc = (p: Project, name: string) => p.services.find((s) => s.name === name)!;

describe('parseSize / parseDuration', () => {
  it('reads binary sizes with optional B/iB and plain bytes', () => {
    expect(parseSize('512M')).toBe(512 * 1024 * 1024);
    expect(parseSize('64k')).toBe(65536);
    expect(parseSize('64K')).toBe(65536);
    expect(parseSize('1G')).toBe(1024 ** 3);
    expect(parseSize('1GiB')).toBe(1024 ** 3);
    expect(parseSize('2mb')).toBe(2 * 1024 ** 2);
    expect(parseSize('1.5G')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('10B')).toBe(10);
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize(4096)).toBe(4096);
    expect(() => parseSize('lots')).toThrow(/must be a size like 512M \(got "lots"\)/);
    expect(() => parseSize(-1)).toThrow(RangeError);
  });

  it('reads durations in ms, plain numbers in the given unit', () => {
    expect(parseDuration('250ms', 's')).toBe(250);
    expect(parseDuration('30s', 'ms')).toBe(30_000);
    expect(parseDuration('5m', 's')).toBe(300_000);
    expect(parseDuration('1h30m', 's')).toBe(5_400_000);
    expect(parseDuration('1.5s', 's')).toBe(1500);
    expect(parseDuration(60, 's')).toBe(60_000);
    expect(parseDuration('60', 's')).toBe(60_000);
    expect(parseDuration(250, 'ms')).toBe(250);
    expect(() => parseDuration('soon', 's')).toThrow(/must be a duration like 30s/);
    expect(() => parseDuration('5 minutes', 's')).toThrow(RangeError);
  });
});

describe('findComposeFile', () => {
  it('finds clove.yaml, else clove.yml, in the directory only', () => {
    expect(COMPOSE_FILES).toEqual(['clove.yaml', 'clove.yml']);
    const dir = projectDir({ 'clove.yml': 'agents: {}' });
    expect(findComposeFile(dir)).toBe(path.join(dir, 'clove.yml'));
    fs.writeFileSync(path.join(dir, 'clove.yaml'), 'agents: {}');
    expect(findComposeFile(dir)).toBe(path.join(dir, 'clove.yaml'));
    const sub = path.join(dir, 'sub');
    fs.mkdirSync(sub);
    expect(findComposeFile(sub)).toBeNull();
    fs.mkdirSync(path.join(sub, 'clove.yaml')); // a directory is not a compose file
    expect(findComposeFile(sub)).toBeNull();
  });
});

describe('loadCompose normalizes a full example', () => {
  const yaml = `
version: 1
name: research
x-common: &common
  restart_policy: on-failure
  limits: { memory: 512M, cpu: 0.5, pids: 64 }
agents:
  coordinator:
    <<: *common
    script: a.py
    args: ["--rounds", "\${ROUNDS:-3}"]
    env_file: [base.env, { path: local.env, required: false }, over.env]
    env: { LOG_LEVEL: debug, SHARED: from-env, N: 3, ON: true, HOME_DIR: "\${HOMEISH}" }
    watchdog: 30s
    restart_window: 90
    min_uptime_ms: 2s
    permissions: standard
    network: false
    sandboxed: true
    quotas: { llm_tokens: 20000, exec_count: { limit: 50, policy: deny }, wall_time: 1h, memory: 256M, cpu_time: 1500 }
    service_quotas: { llm_tokens: 100000, network_bytes: 1M }
    budgets: { mailbox_messages: 10, mailbox_bytes: 64k }
    depends_on: { workers: { condition: service_healthy }, db: {} }
    healthcheck: { test: ["CMD", "python3", "-c", "print(1)"], interval: 2s, timeout: 5s, retries: 4 }
  workers:
    command: ["python3", "b.py"]
    cwd: sub
    replicas: \${WORKERS:-2}
    env: ["A=1", "B=x=y", "FROM_HOST"]
    restart_policy: { condition: on-failure, max_attempts: 5, delay: 1s, window: 60s, max_delay: 30s, multiplier: 3 }
    healthcheck: { test: ["CMD-SHELL", "test -e /tmp/ok"] }
    depends_on: [db]
  db:
    script: c.py
    watchdog_ms: 1500
    healthcheck: { test: "pgrep -f c.py", interval: 1 }
  idle:
    script: c.py
    restart_policy: { max_attempts: 2 }
    healthcheck: { test: ["NONE"] }
    env: { PRICE: "$$5", HOST_ONLY: }
`;
  const files = {
    'base.env': 'SHARED=from-base\nBASE_ONLY=1\n# a comment\nQUOTED="a b"\n',
    'over.env': 'BASE_ONLY=2\n',
    'sub/.keep': '',
  };
  const p = load(yaml, files, { ROUNDS: '7', HOMEISH: '/h', FROM_HOST: 'yes', HOST_ONLY: 'h' });

  it('names the project and orders services dependencies first, ties in file order', () => {
    expect(p.name).toBe('research');
    expect(path.isAbsolute(p.file)).toBe(true);
    expect(p.dir).toBe(path.dirname(p.file));
    expect(p.services.map((s) => s.name)).toEqual(['db', 'workers', 'coordinator', 'idle']);
    expect(p.warnings).toEqual([]);
  });

  it('turns sizes, cpu, durations, merge keys and interpolation into the SPAWN request', () => {
    const c = svc(p, 'coordinator');
    expect(c.replicated).toBe(false);
    expect(c.replicas).toBe(1);
    expect(c.spawn).toEqual({
      script: path.join(p.dir, 'a.py'),
      args: ['--rounds', '7'],
      env: {
        SHARED: 'from-env',
        BASE_ONLY: '2',
        QUOTED: 'a b',
        LOG_LEVEL: 'debug',
        N: '3',
        ON: 'true',
        HOME_DIR: '/h',
      },
      restart_policy: 'on-failure',
      restart_window: 90,
      min_uptime_ms: 2000,
      watchdog_ms: 30_000,
      limits: { memory: 512 * 1024 * 1024, cpu_quota: 50_000, cpu_period: 100_000, max_pids: 64 },
      permissions: 'standard',
      network: false,
      sandboxed: true,
      quotas: {
        llm_tokens: { limit: 20000 },
        exec_count: { limit: 50, policy: 'deny' },
        wall_time: { limit: 3_600_000 },
        memory: { limit: 256 * 1024 * 1024 },
        cpu_time: { limit: 1500 },
      },
      budgets: { mailbox_messages: 10, mailbox_bytes: 65536 },
    });
    expect(c.serviceQuotas).toEqual({ llm_tokens: { limit: 100000 }, network_bytes: { limit: 1024 * 1024 } });
    expect(c.dependsOn).toEqual([
      { service: 'workers', condition: 'healthy' },
      { service: 'db', condition: 'started' },
    ]);
    expect(c.healthcheck).toEqual({
      command: ['python3', '-c', 'print(1)'],
      interval_ms: 2000,
      timeout_ms: 5000,
      retries: 4,
    });
  });

  it('reads the restart object form, command, env lists and the other healthcheck forms', () => {
    const w = svc(p, 'workers');
    expect(w.replicated).toBe(true);
    expect(w.replicas).toBe(2); // ${WORKERS:-2}, typed as a number after interpolation
    expect(w.spawn).toEqual({
      command: ['python3', 'b.py'],
      cwd: path.join(p.dir, 'sub'),
      env: { A: '1', B: 'x=y', FROM_HOST: 'yes' },
      restart_policy: 'on-failure',
      max_restarts: 5,
      backoff_initial_ms: 1000,
      restart_window: 60,
      backoff_max_ms: 30_000,
      backoff_multiplier: 3,
    });
    expect(w.dependsOn).toEqual([{ service: 'db', condition: 'started' }]);
    expect(w.healthcheck).toEqual({
      command: ['sh', '-c', 'test -e /tmp/ok'],
      interval_ms: 5000,
      timeout_ms: 10_000,
      retries: 3,
    });
    const db = svc(p, 'db');
    expect(db.spawn.watchdog_ms).toBe(1500);
    expect(db.healthcheck).toEqual({
      command: ['sh', '-c', 'pgrep -f c.py'],
      interval_ms: 1000,
      timeout_ms: 10_000,
      retries: 3,
    });
    const idle = svc(p, 'idle');
    expect(idle.spawn.restart_policy).toBe('always'); // compose: an object without condition means any
    expect(idle.spawn.max_restarts).toBe(2);
    expect(idle.healthcheck).toBeNull();
    expect(idle.spawn.env).toEqual({ PRICE: '$5', HOST_ONLY: 'h' });
  });

  it("reads the project's .env for interpolation; the caller's environment wins", () => {
    const p = load(
      'agents:\n  a:\n    script: a.py\n    env: {X: "${X}", Y: "${Y}"}\n',
      { '.env': 'X=from-dotenv\nY=from-dotenv\n' },
      { Y: 'from-caller' },
    );
    expect(p.services[0].spawn.env).toEqual({ X: 'from-dotenv', Y: 'from-caller' });
  });

  it('runs an `entry` with the Python runner, its module found beside clove.yaml', () => {
    const p = load(
      [
        'agents:',
        '  graph:',
        '    entry: my_graph:app.graph',
        '    python: venv/bin/python',
        '    args: [--max-attempts, "5"]',
        '    env: { PYTHONPATH: /extra, K: v }',
        '  crew:',
        '    entry: crew:crew',
        '',
      ].join('\n'),
    );
    expect(svc(p, 'graph').spawn).toEqual({
      command: [
        path.join(p.dir, 'venv/bin/python'),
        '-m',
        'clove_sdk.integrations.run',
        'my_graph:app.graph',
      ],
      args: ['--max-attempts', '5'],
      env: { PYTHONPATH: `${p.dir}:/extra`, K: 'v' },
    });
    // a `python` with a / is relative to clove.yaml; none: the loader's resolver (the real python3 by default)
    const q = loadCompose(p.file, { env: {}, python: () => '/usr/bin/python3.12' });
    expect(svc(q, 'crew').spawn).toEqual({
      command: ['/usr/bin/python3.12', '-m', 'clove_sdk.integrations.run', 'crew:crew'],
      env: { PYTHONPATH: q.dir },
    });
    // another interpreter is another definition: `up` replaces the agents
    expect(svc(q, 'crew').hash).not.toBe(
      svc(loadCompose(p.file, { env: {}, python: () => 'python3' }), 'crew').hash,
    );
  });

  it('splits a command line as a shell splits words', () => {
    const p = load('agents:\n  a:\n    command: python3 -c \'print("a b")\' --name "x y" $HOME\\ z\n');
    expect(p.services[0].spawn.command).toEqual([
      'python3',
      '-c',
      'print("a b")',
      '--name',
      'x y',
      '$HOME z',
    ]);
  });
});

describe('interpolation', () => {
  it('follows compose: defaults, unset vs empty, $$, and warns about unset variables', () => {
    const p = load(
      `agents:
  a:
    script: a.py
    args: ["\${SET}", "\${EMPTY:-d1}", "\${EMPTY-d2}", "\${UNSET-d3}", "\${UNSET}", "$$HOME", "a$b", "\${SET:?no}"]
`,
      {},
      { SET: 'v', EMPTY: '' },
    );
    expect(svc(p, 'a').spawn.args).toEqual(['v', 'd1', '', 'd3', '', '$HOME', 'a$b', 'v']);
    expect(p.warnings).toEqual(['UNSET is not set: ${UNSET} became an empty string']);
  });

  it('uses process.env when no env is given', () => {
    const dir = projectDir({
      'clove.yaml': 'agents:\n  a:\n    script: a.py\n    args: ["${CLOVE_COMPOSE_TEST_VAR}"]\n',
      'a.py': '',
    });
    process.env.CLOVE_COMPOSE_TEST_VAR = 'from-process';
    try {
      expect(loadCompose(path.join(dir, 'clove.yaml')).services[0].spawn.args).toEqual(['from-process']);
    } finally {
      delete process.env.CLOVE_COMPOSE_TEST_VAR;
    }
  });
});

describe('replicas, labels and the config hash', () => {
  const yaml = 'agents:\n  coordinator:\n    script: a.py\n  workers:\n    script: b.py\n    replicas: 3\n';

  it('names replicas <service>-N and a plain service by its own name', () => {
    const p = load(yaml);
    expect(replicaNames(svc(p, 'workers'))).toEqual(['workers-1', 'workers-2', 'workers-3']);
    expect(replicaNames(svc(p, 'workers'), 5)).toEqual([
      'workers-1',
      'workers-2',
      'workers-3',
      'workers-4',
      'workers-5',
    ]);
    expect(replicaNames(svc(p, 'workers'), 0)).toEqual([]);
    expect(replicaNames(svc(p, 'coordinator'))).toEqual(['coordinator']);
  });

  it('labels agents with project, service, hash and (replicated only) the replica index', () => {
    const p = load(yaml);
    const w = svc(p, 'workers');
    expect(p.name).toBe('proj');
    expect(composeLabels(p, w, 2)).toEqual({
      'clove.project': 'proj',
      'clove.service': 'workers',
      'clove.config-hash': w.hash,
      'clove.replica': '2',
    });
    const c = svc(p, 'coordinator');
    expect(composeLabels(p, c, 1)).toEqual({
      'clove.project': 'proj',
      'clove.service': 'coordinator',
      'clove.config-hash': c.hash,
    });
  });

  it("adds the service's own labels (map or list form) under the clove.* ones, and hashes them", () => {
    const p = load(`agents:
  a:
    script: a.py
    labels: { team: research, tier: 2, gpu: false }
  b:
    script: b.py
    replicas: 1
    labels: ["team=infra", "note=a=b"]
`);
    expect(svc(p, 'a').labels).toEqual({ team: 'research', tier: '2', gpu: 'false' });
    expect(composeLabels(p, svc(p, 'b'), 1)).toEqual({
      team: 'infra',
      note: 'a=b',
      'clove.project': 'proj',
      'clove.service': 'b',
      'clove.config-hash': svc(p, 'b').hash,
      'clove.replica': '1',
    });
    const plain = load('agents:\n  a:\n    script: a.py\n');
    expect(svc(plain, 'a').labels).toEqual({});
    expect(svc(p, 'a').hash).not.toBe(svc(plain, 'a').hash);
  });

  it('derives the default project name from the directory, sanitized', () => {
    const dir = projectDir(
      { 'clove.yaml': 'agents:\n  a:\n    script: a.py\n', 'a.py': '' },
      'My Project.v2',
    );
    expect(loadCompose(path.join(dir, 'clove.yaml')).name).toBe('myprojectv2');
  });

  it('keeps the hash for the same input, across key order and replicas; changes it with env', () => {
    const base = load(yaml);
    const h = svc(base, 'workers').hash;
    expect(h).toMatch(/^[0-9a-f]{12}$/);
    // Same definition in another directory: absolute script paths differ, so compare within one directory.
    const dir = path.dirname(base.file);
    const write = (text: string) => {
      fs.writeFileSync(base.file, text);
      return svc(loadCompose(base.file, { env: {} }), 'workers').hash;
    };
    expect(write(yaml)).toBe(h);
    expect(write(yaml.replace('replicas: 3', 'replicas: 7'))).toBe(h);
    expect(write(yaml + '    service_quotas: { llm_calls: 5 }\n')).toBe(h);
    const a = write(yaml + '    env: { A: "1", B: "2" }\n');
    expect(a).not.toBe(h);
    expect(write(yaml + '    env: { B: "2", A: "1" }\n')).toBe(a);
    expect(write(yaml + '    env: { A: "1", B: "3" }\n')).not.toBe(a);
    // env_file contents are part of what defines a replica.
    fs.writeFileSync(path.join(dir, 'w.env'), 'X=1\n');
    const f1 = write(yaml + '    env_file: w.env\n');
    fs.writeFileSync(path.join(dir, 'w.env'), 'X=2\n');
    expect(write(yaml + '    env_file: w.env\n')).not.toBe(f1);
    expect(write(yaml + '    healthcheck: { test: "true" }\n')).not.toBe(h);
    // The other service is untouched by all of this.
    expect(svc(loadCompose(base.file), 'coordinator').hash).toBe(svc(base, 'coordinator').hash);
  });
});

describe('docs/compose.md', () => {
  it('its full example loads (the block after the compose-example marker)', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs/compose.md'), 'utf8');
    const m = /<!-- compose-example[^>]*-->\s*```yaml\n([\s\S]*?)```/.exec(doc);
    expect(m, 'docs/compose.md lost its compose-example block').not.toBeNull();
    const p = load(m![1], { 'coordinator.py': '', 'worker.py': '', '.env': 'API_URL=http://x\n' });
    expect(p.name).toBe('research');
    expect(p.services.map((s) => s.name)).toEqual(['workers', 'coordinator']);
    const c = svc(p, 'coordinator');
    expect(c.spawn.args).toEqual(['--rounds', '3']);
    expect(c.spawn.env).toEqual({ API_URL: 'http://x', LOG_LEVEL: 'debug' });
    expect(c.spawn.limits).toEqual({
      memory: 256 * 1024 * 1024,
      cpu_quota: 50_000,
      cpu_period: 100_000,
      max_pids: 64,
    });
    expect(c.dependsOn).toEqual([{ service: 'workers', condition: 'healthy' }]);
    expect(replicaNames(svc(p, 'workers'))).toEqual(['workers-1', 'workers-2', 'workers-3']);
  });
});
