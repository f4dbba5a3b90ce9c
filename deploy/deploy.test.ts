/**
 * The deploy files, each checked by a real tool, and each check proven to bite on a broken copy:
 * - deploy/Dockerfile: built (docker build, on a local base from deploy/docker/local-base.sh: no registry
 *   here) and run with the privileges docs/deploy.md lists; the kernel inside answers on its socket
 *   (mounted to the host through the data volume) and `docker exec … clove ps`, runs a sandboxed agent,
 *   restarts it after SIGKILL, and Docker's HEALTHCHECK reports healthy;
 * - deploy/systemd: systemd-analyze verify, strictly (deploy/systemd/verify.sh);
 * - deploy/terraform: HCL parsed and checked by deploy/terraform/check (go run);
 * - deploy/k8s: kubernetes-validate, strict, pinned version (deploy/k8s/check.py).
 * Nothing is skipped: when Docker does not answer, the image tests fail with the reason.
 */
import { execFile, type ExecFileOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, tempDir, waitForSocket } from '../harness/kernel.js';
import { dockerUnavailable } from '../harness/cluster/docker.js';
import { alive } from '../harness/cluster/provider.js';
import { freePort } from '../harness/services.js';
import { CloveClient } from '../sdk/typescript/client.js';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
/** Label on the containers this file starts, with the test process's pid: leftovers of dead runs are removed. */
const LABEL = 'clove.deploy.test';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end; never throws for a non-zero exit (the caller asserts on `code`). */
function run(cmd: string, args: string[], opts: ExecFileOptions = {}): Promise<Run> {
  return new Promise((res, rej) => {
    execFile(
      cmd,
      args,
      { maxBuffer: 64 << 20, encoding: 'utf8', ...opts },
      (err: (Error & { code?: number | string }) | null, stdout, stderr) => {
        if (err && typeof err.code !== 'number') rej(new Error(`${cmd} ${args.join(' ')}: ${err.message}`));
        else res({ code: err ? Number(err.code) : 0, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

/** Like run, but a non-zero exit is an error that carries the program's output. */
async function must(cmd: string, args: string[], opts: ExecFileOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0)
    throw new Error(
      `${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`,
    );
  return r.stdout;
}

/** A copy of `deploy/<sub>` (and its siblings, which the terraform module reads) in a temp dir. */
/** Calls `fn` every `everyMs` until it returns something truthy; fails after `timeoutMs` naming `what`. */
async function poll<T>(
  fn: () => Promise<T | undefined>,
  what: string,
  timeoutMs = 60_000,
  everyMs = 500,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out (${timeoutMs} ms) waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function copyDeploy(): string {
  const dir = tempDir('clvdeploy');
  fs.cpSync(DEPLOY, path.join(dir, 'deploy'), {
    recursive: true,
    filter: (src) => !src.endsWith('.test.ts'),
  });
  return path.join(dir, 'deploy');
}

function edit(file: string, from: string | RegExp, to: string): void {
  const src = fs.readFileSync(file, 'utf8');
  const out = src.replace(from, to);
  if (out === src) throw new Error(`${file}: ${String(from)} not found`);
  fs.writeFileSync(file, out);
}

describe('systemd units: systemd-analyze verify (strict)', () => {
  const verify = path.join(DEPLOY, 'systemd', 'verify.sh');

  it('clove.service and clove-relay.service verify without a message', async () => {
    const out = await must('bash', [verify]);
    expect(out).toContain('verify: ok');
  });

  it('a broken unit fails: a misspelled key, a value that does not parse, a missing binary', async () => {
    const dir = copyDeploy();
    try {
      const unit = path.join(dir, 'systemd', 'clove.service');
      const cases: Array<[string, RegExp | string, string, RegExp]> = [
        ['key.service', /^Delegate=yes$/m, 'Delegat=yes', /Unknown key 'Delegat'/],
        ['kill.service', /^KillMode=mixed$/m, 'KillMode=sometimes', /kill mode/i],
        [
          'exec.service',
          '/usr/local/bin/clove kernel',
          '/usr/local/bin/clove-missing kernel',
          /not executable/,
        ],
      ];
      for (const [name, from, to, why] of cases) {
        const broken = path.join(dir, 'systemd', name);
        fs.copyFileSync(unit, broken);
        edit(broken, from, to);
        const r = await run('bash', [verify, broken]);
        expect(r.code, `${name} should fail`).toBe(1);
        expect(r.stderr).toMatch(why);
      }
    } finally {
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  });
});

describe("systemd units: the relay's hardening (systemd-analyze security --offline)", () => {
  it('the relay unit scores at most its declared exposure; a weakened copy fails', async () => {
    const verify = path.join(DEPLOY, 'systemd', 'verify.sh');
    const ok = await must('bash', [verify]);
    expect(ok).toMatch(/clove-relay\.service: exposure \d\.\d \(at most 2\.0\)/);
    const dir = copyDeploy();
    try {
      const unit = path.join(dir, 'systemd', 'clove-relay.service');
      for (const line of [
        'ProtectSystem=strict',
        'PrivateDevices=yes',
        'RestrictNamespaces=yes',
        'CapabilityBoundingSet=',
      ])
        edit(unit, new RegExp(`^${line}\n`, 'm'), '');
      edit(unit, /^SystemCallFilter=.*\n/m, '');
      const r = await run('bash', [verify, unit]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/clove-relay\.service: exposure \d\.\d is above its limit 2\.0/);
    } finally {
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  });
});

describe('terraform module: HCL check (go run deploy/terraform/check)', () => {
  const checkDir = path.join(DEPLOY, 'terraform', 'check');
  // The module cache is Go's default (GOPATH): the first run downloads hcl/v2 and terraform-config-inspect.
  const goEnv = { ...process.env, GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local' };
  const check = (moduleDir: string) => run('go', ['run', '.', moduleDir], { cwd: checkDir, env: goEnv });

  it('the module parses, every reference resolves, every required variable is documented', async () => {
    const r = await check(path.join(DEPLOY, 'terraform'));
    expect(r.stdout + r.stderr).toContain('check: ok');
    expect(r.code).toBe(0);
  }, 600_000);

  it('a broken module is caught: syntax, undeclared variable, undocumented variable, output to nothing, template variable', async () => {
    const dir = copyDeploy();
    try {
      const tf = path.join(dir, 'terraform');
      edit(path.join(tf, 'main.tf'), 'var.instance_type', 'var.instance_typo');
      edit(path.join(tf, 'variables.tf'), '  description = "VPC of the security group."\n', '');
      edit(path.join(tf, 'outputs.tf'), 'aws_security_group.relay.id', 'aws_security_group.kernel.id');
      edit(path.join(tf, 'cloud-init.yaml.tftpl'), '"$${token}"', '"${token}"');
      fs.appendFileSync(path.join(tf, 'outputs.tf'), '\noutput "broken" {\n  value = \n');
      const r = await check(tf);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain('reference to undeclared variable var.instance_typo');
      expect(r.stdout).toContain('variable "vpc_id" has no default and no description');
      expect(r.stdout).toContain('variable "instance_type" is declared but never used');
      expect(r.stdout).toContain('reference to undeclared resource aws_security_group.kernel');
      expect(r.stdout).toMatch(/cloud-init\.yaml\.tftpl:\d+:\d+: template .* uses "token"/);
      expect(r.stdout).toMatch(/outputs\.tf:\d+:\d+: .*(Invalid expression|Missing expression|Unclosed)/);
    } finally {
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  }, 600_000);
});

describe('terraform module: the cloud-init template', () => {
  const checkDir = path.join(DEPLOY, 'terraform', 'check');
  const goEnv = { ...process.env, GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local' };

  it('a template that renders to broken YAML, or a file written without content, is caught', async () => {
    const dir = copyDeploy();
    try {
      const tpl = path.join(dir, 'terraform', 'cloud-init.yaml.tftpl');
      const good = fs.readFileSync(tpl, 'utf8');
      edit(tpl, '  - path: /etc/default/clove-relay', '   - path: /etc/default/clove-relay');
      let r = await run('go', ['run', '.', path.join(dir, 'terraform')], { cwd: checkDir, env: goEnv });
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/cloud-init cloud-init\.yaml\.tftpl: rendered, it is not YAML/);
      fs.writeFileSync(tpl, good);
      edit(tpl, 'content: ${jsonencode(relay_unit)}', 'content: ""');
      r = await run('go', ['run', '.', path.join(dir, 'terraform')], { cwd: checkDir, env: goEnv });
      expect(r.code).toBe(1);
      expect(r.stdout).toContain('write_files[1] (/etc/systemd/system/clove-relay.service) has no content');
      expect(r.stdout).toContain('passes "relay_unit", which the template never uses');
    } finally {
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  }, 600_000);
});

describe('kubernetes manifests: kubernetes-validate (strict, pinned version)', () => {
  const check = (dir?: string) =>
    run('python3', [path.join(DEPLOY, 'k8s', 'check.py'), ...(dir ? [dir] : [])]);

  it('every manifest validates and kustomization.yaml lists them all', async () => {
    const r = await check();
    expect(r.stdout + r.stderr).toMatch(/check: ok: .* against Kubernetes 1\.\d+\.\d+ \(strict\)/);
    expect(r.code).toBe(0);
  });

  it('a broken manifest is caught: unknown field, wrong type, unlisted manifest', async () => {
    const dir = copyDeploy();
    try {
      const k8s = path.join(dir, 'k8s');
      edit(path.join(k8s, 'etcd.yaml'), '  replicas: 3', '  replica: 3');
      edit(path.join(k8s, 'nats.yaml'), '  replicas: 3', '  replicas: three');
      edit(path.join(k8s, 'kustomization.yaml'), '  - relay.yaml\n', '');
      const r = await check(k8s);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/etcd\.yaml .*StatefulSet\/clove-etcd.*'replica' was unexpected/);
      expect(r.stdout).toMatch(/nats\.yaml .*spec\.replicas: 'three' is not of type 'integer'/);
      expect(r.stdout).toContain('relay.yaml is not listed in resources');
    } finally {
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  });
});

/** Agent run in the container: reports its uid and pid in its namespace, then idles. */
const AGENT = `import os, sys, time
print("deploy-agent uid=%d pid=%d" % (os.getuid(), os.getpid()), flush=True)
while True:
    time.sleep(60)
`;

describe('docker image: build on a local base, run, serve', () => {
  let reason: string | null = null;
  let tag = '';
  let container = '';
  let work = '';
  let dataDir = '';
  let client: CloveClient | null = null;
  let httpPort = 0;

  /** Removes containers of this file whose test process is gone (a run killed before its afterAll). */
  async function sweep(): Promise<void> {
    const ids = (await must('docker', ['ps', '-aq', '--filter', `label=${LABEL}`]))
      .split('\n')
      .filter(Boolean);
    for (const id of ids) {
      const pid = Number(
        (await must('docker', ['inspect', '-f', `{{index .Config.Labels "${LABEL}"}}`, id])).trim(),
      );
      if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) await run('docker', ['rm', '-f', id]);
    }
  }

  beforeAll(async () => {
    reason = await dockerUnavailable();
    if (reason) return;
    await sweep();
    const base = await must('bash', [path.join(DEPLOY, 'docker', 'local-base.sh')]);
    const baseTag = base.trim().split('\n').pop() ?? '';
    expect(baseTag).toMatch(/^clove-deploy-base:[0-9a-f]{16}$/);
    // One tag per checkout: runs from two checkouts at once do not retag each other's image.
    tag = `clove-deploy:test-${createHash('sha256').update(REPO_ROOT).digest('hex').slice(0, 12)}`;
    await must(
      'docker',
      [
        'build',
        '--network',
        'host',
        '--build-arg',
        `BASE=${baseTag}`,
        '--label',
        `${LABEL}.image=1`,
        '-f',
        path.join(DEPLOY, 'Dockerfile'),
        '-t',
        tag,
        REPO_ROOT,
      ],
      // The legacy builder: this machine's Docker CLI has no buildx plugin.
      { env: { ...process.env, DOCKER_BUILDKIT: '0' } },
    );
    // The previous build of this tag, now untagged (a few hundred MB each).
    await run('docker', ['image', 'prune', '-f', '--filter', `label=${LABEL}.image=1`]);
  }, 1_800_000);

  afterAll(async () => {
    client?.close();
    if (container) {
      if (process.env.CLOVE_DEPLOY_KEEP !== '1') await run('docker', ['rm', '-f', container]);
    }
    if (work) fs.rmSync(work, { recursive: true, force: true });
  }, 120_000);

  it('docker answers (ci/docker.sh starts it)', () => {
    expect(reason).toBeNull();
  });

  it('the kernel runs in the container with the documented privileges and answers on the data volume', async () => {
    if (reason) throw new Error(reason);
    work = tempDir('clvdock');
    dataDir = path.join(work, 'data');
    const agents = path.join(work, 'agents');
    fs.mkdirSync(dataDir, { mode: 0o700 });
    fs.mkdirSync(agents, { mode: 0o755 });
    fs.chmodSync(work, 0o755);
    fs.writeFileSync(path.join(agents, 'agent.py'), AGENT, { mode: 0o644 });
    // docs/deploy.md "Docker": the least the sandbox needs (Docker's default capabilities plus CAP_SYS_ADMIN,
    // no seccomp/AppArmor profile, the host's cgroup hierarchy writable), rather than --privileged.
    const privileges = [
      '--cap-add',
      'SYS_ADMIN',
      '--security-opt',
      'seccomp=unconfined',
      '--security-opt',
      'apparmor=unconfined',
      '--cgroupns',
      'host',
      '-v',
      '/sys/fs/cgroup:/sys/fs/cgroup:rw',
    ];
    container = `clove-deploy-test-${process.pid}`;
    httpPort = await freePort();
    await must('docker', [
      'run',
      '-d',
      '--name',
      container,
      '--label',
      `${LABEL}=${process.pid}`,
      ...privileges,
      '--network',
      'host',
      '-v',
      `${dataDir}:/var/lib/clove`,
      '-v',
      `${agents}:/agents:ro`,
      tag,
      '--log-format',
      'json',
      '--http',
      `127.0.0.1:${httpPort}`,
    ]);
    const socket = path.join(dataDir, 'clove.sock');
    try {
      await waitForSocket(socket, 60_000);
    } catch (e) {
      const logs = await run('docker', ['logs', container]);
      throw new Error(`${(e as Error).message}\n${logs.stdout}\n${logs.stderr}`, { cause: e });
    }
    client = await CloveClient.connect({ socketPath: socket, timeoutMs: 30_000 });
    const ps = await must('docker', ['exec', container, 'clove', 'ps']);
    expect(ps).toMatch(/no agents|SERVICE|NAME/i);
  }, 120_000);

  it("with Docker's default privileges the kernel refuses to start and says why", async () => {
    if (!tag || reason) throw new Error(reason ?? 'no image');
    const r = await run(
      'docker',
      ['run', '--rm', '--network', 'none', '--label', `${LABEL}=${process.pid}`, tag],
      {
        timeout: 120_000,
      },
    );
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/sandbox unavailable/);
  }, 180_000);

  it('an agent runs sandboxed and is restarted after SIGKILL', async () => {
    if (!client) throw new Error(reason ?? 'no kernel');
    const c = client;
    const spawned = await c.spawn({
      name: 'deploy-agent',
      script: '/agents/agent.py',
      restart_policy: 'always',
    });
    expect(spawned.status).toBe('running');
    expect(spawned.isolation.fully_isolated).toBe(true);
    expect(spawned.isolation.namespaces).toMatchObject({ pid: true, net: true, mnt: true, uts: true });
    expect(spawned.isolation.cgroups.available).toBe(true);
    const first = await poll(
      async () => (await c.list()).find((a) => a.name === 'deploy-agent' && a.state === 'RUNNING'),
      'the agent running',
    );
    // The kernel's pid of the agent is in the container's PID namespace: kill it from there (the shell's
    // builtin kill: the slim image has no procps).
    await must('docker', ['exec', container, 'sh', '-c', `kill -KILL ${first.pid}`]);
    const again = await poll(
      async () =>
        (await c.list()).find(
          (a) => a.name === 'deploy-agent' && a.state === 'RUNNING' && a.restarts >= 1 && a.pid !== first.pid,
        ),
      'the agent restarted after SIGKILL',
    );
    expect(again.id).toBe(first.id);
    // Its own uid (not root) and pid 1 or 2 in its own PID namespace, from its log.
    const logs = await poll(async () => {
      const r = await run('docker', ['exec', container, 'clove', 'logs', 'deploy-agent']);
      return /deploy-agent uid=\d+ pid=\d+/.test(r.stdout) ? r.stdout : undefined;
    }, "the agent's line in its log");
    const m = /deploy-agent uid=(\d+) pid=(\d+)/.exec(logs);
    expect(Number(m?.[1])).toBeGreaterThan(0);
    expect(Number(m?.[2])).toBeLessThan(10);
  }, 180_000);

  it('the HTTP API serves health, its OpenAPI document, metrics and the prebuilt dashboard from the image', async () => {
    if (!client) throw new Error(reason ?? 'no kernel');
    const base = `http://127.0.0.1:${httpPort}`;
    const health = await poll(async () => {
      const r = await fetch(`${base}/healthz`).catch(() => undefined);
      return r?.ok ? r : undefined;
    }, 'the HTTP API to answer');
    expect(health.status).toBe(200);
    // The token file is written by root in the container, 0600, on the mounted data volume.
    const tokenFile = path.join(dataDir, 'http-token');
    expect(fs.statSync(tokenFile).mode & 0o777).toBe(0o600);
    const token = fs.readFileSync(tokenFile, 'utf8').trim();
    expect((await fetch(`${base}/api/v1/agents`)).status).toBe(401);
    const auth = { headers: { authorization: `Bearer ${token}` } };
    const agents = await fetch(`${base}/api/v1/agents`, auth);
    expect(agents.status).toBe(200);
    const openapi = await fetch(`${base}/api/v1/openapi.json`, auth);
    expect(openapi.status).toBe(200);
    const doc = (await openapi.json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toContain('/api/v1/agents');
    const metrics = await fetch(`${base}/metrics`, auth);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^# HELP clove_/m);
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<script[^>]+src="[^"]+\.js"/);
  }, 120_000);

  it('the HEALTHCHECK (clove status) reports healthy', async () => {
    if (!container) throw new Error(reason ?? 'no container');
    const health = await poll(
      async () => {
        const s = (await must('docker', ['inspect', '-f', '{{.State.Health.Status}}', container])).trim();
        return s === 'healthy' ? s : undefined;
      },
      'docker to report the container healthy',
      120_000,
      1000,
    );
    expect(health).toBe('healthy');
    const cfg = JSON.parse(await must('docker', ['inspect', '-f', '{{json .Config}}', tag])) as {
      Healthcheck: { Test: string[] };
      Volumes: Record<string, unknown>;
      Entrypoint: string[];
    };
    expect(cfg.Healthcheck.Test).toEqual(['CMD', 'clove', 'status']);
    expect(Object.keys(cfg.Volumes)).toEqual(['/var/lib/clove']);
    expect(cfg.Entrypoint).toEqual(['/usr/bin/tini', '--', 'clove', 'kernel']);
  }, 180_000);

  it('without privileges, as the clove user and --sandbox off, the kernel runs and is healthy', async () => {
    if (!tag || reason) throw new Error(reason ?? 'no image');
    const name = `clove-deploy-test-user-${process.pid}`;
    try {
      await must('docker', [
        'run',
        '-d',
        '--name',
        name,
        '--label',
        `${LABEL}=${process.pid}`,
        '--user',
        'clove',
        '--network',
        'none',
        '-e',
        'CLOVE_DATA_DIR=/tmp/clove',
        '-e',
        'CLOVE_SOCKET=/tmp/clove/clove.sock',
        tag,
        '--sandbox',
        'off',
      ]);
      const status = await poll(async () => {
        const r = await run('docker', ['exec', name, 'clove', 'status', '--json']);
        return r.code === 0 ? (JSON.parse(r.stdout) as { reachable: boolean; pid: number }) : undefined;
      }, 'the unprivileged kernel to answer');
      expect(status.reachable).toBe(true);
      const id = (await must('docker', ['exec', name, 'sh', '-c', `id -u; stat -c %u /proc/${status.pid}`]))
        .trim()
        .split('\n');
      expect(id).toEqual(['10001', '10001']);
      await poll(
        async () =>
          (await must('docker', ['inspect', '-f', '{{.State.Health.Status}}', name])).trim() === 'healthy' ||
          undefined,
        'docker to report the unprivileged container healthy',
        120_000,
        1000,
      );
    } finally {
      await run('docker', ['rm', '-f', name]);
    }
  }, 180_000);

  it('the runtime image holds production dependencies only and the built project', async () => {
    if (!tag || reason) throw new Error(reason ?? 'no image');
    const ls = await must('docker', [
      'run',
      '--rm',
      '--entrypoint',
      'sh',
      tag,
      '-c',
      'ls /opt/clove/node_modules; ls /opt/clove/native/build/Release; node --version; python3 --version; id clove',
    ]);
    expect(ls).toContain('better-sqlite3');
    expect(ls).not.toMatch(/^(vitest|typescript|eslint)$/m);
    expect(ls).toContain('clove_native.node');
    expect(ls).toContain('clove-init');
    expect(ls).toMatch(/^v(2\d|[3-9]\d)\./m);
    expect(ls).toMatch(/Python 3\./);
    expect(ls).toMatch(/uid=10001\(clove\)/);
  }, 120_000);
});
