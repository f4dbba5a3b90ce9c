/**
 * Throughput and latency of the kernel's HTTP API (docs/http.md): autocannon against GET /api/v1/agents,
 * GET /metrics and GET /healthz on a kernel process (`clove kernel --http 127.0.0.1:0`) running AGENTS
 * sandboxed agents, spawned through POST /api/v1/agents.
 *
 *   npm run bench:http            (npm run build && node dist/bench/http.js [--quick] [--agents N] [--seconds S] [--connections C])
 *
 * Writes reports/http.json and reports/http.md. The rows are a list of targets (`TARGETS`): a relay
 * in front of the kernel adds its rows there (same paths through /api/v1/machines/:machine/...).
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { KernelProcess } from '../harness/kernel.js';
import { REPO_ROOT, tempDir, until } from '../harness/kernel.js';
import { freePort, waitForPort } from '../harness/services.js';
import { machineInfo, machineLine } from './lib/machine.js';
import { startKernel, stopChild } from './lib/child.js';
import { envelope, givenFlags, mdTable, parseFlags, writeJson, writeText } from './lib/report.js';
import { r } from './lib/stats.js';

const flags = parseFlags(['agents', 'connections', 'seconds']);
const QUICK = flags.quick;
const AGENTS = Number(flags.get('agents') ?? 100);
const SECONDS = Number(flags.get('seconds') ?? (QUICK ? 3 : 10));
const CONNECTIONS = Number(flags.get('connections') ?? 10);

/** What autocannon's result holds that the report uses (it ships no types). */
interface CannonResult {
  requests: { average: number; total: number };
  latency: { average: number; p50: number; p90: number; p99: number; max: number };
  throughput: { average: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
}
type Cannon = (o: {
  url: string;
  connections: number;
  duration: number;
  headers?: Record<string, string>;
}) => Promise<CannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Cannon;

/** One row of the report: a URL hit by autocannon, with what it goes through. */
export interface Target {
  name: string;
  /** What serves it (e.g. `kernel` here; `relay → tunnel → kernel` for the relay's rows). */
  via: string;
  url: string;
  headers: Record<string, string>;
}

export interface Row {
  name: string;
  via: string;
  connections: number;
  seconds: number;
  requests: number;
  rps: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  mb_per_s: number;
  errors: number;
  non2xx: number;
}

/** Runs autocannon on each target in turn (never two at once: they share two cores). */
export async function measure(targets: Target[]): Promise<Row[]> {
  const rows: Row[] = [];
  for (const t of targets) {
    const res = await autocannon({
      url: t.url,
      connections: CONNECTIONS,
      duration: SECONDS,
      headers: t.headers,
    });
    rows.push({
      name: t.name,
      via: t.via,
      connections: CONNECTIONS,
      seconds: SECONDS,
      requests: res.requests.total,
      rps: r(res.requests.average),
      p50_ms: r(res.latency.p50),
      p90_ms: r(res.latency.p90),
      p99_ms: r(res.latency.p99),
      max_ms: r(res.latency.max),
      mb_per_s: r(res.throughput.average / 1e6),
      errors: res.errors + res.timeouts,
      non2xx: res.non2xx,
    });
    console.error(`${t.name} (${t.via}): ${rows.at(-1)!.rps} req/s, p99 ${rows.at(-1)!.p99_ms} ms`);
  }
  return rows;
}

/** The kernel's API base URL and token, from the line it logs at start. */
async function apiOf(k: KernelProcess): Promise<{ url: string; token: string }> {
  const m = await until(
    () => /dashboard at (http:\/\/[^/\s]+)\/#token=([0-9a-f]{64})/.exec(k.stderr()),
    15_000,
    'the HTTP API to listen',
  );
  return { url: m[1], token: m[2] };
}

/**
 * A relay process (`clove relay`) with a machine token for the kernel and a user token for the bench
 * (made with `clove relay token add`), so that the relay's rows go relay → tunnel → kernel.
 */
async function startRelay(): Promise<{
  url: string;
  machineTokenFile: string;
  userToken: string;
  dir: string;
  stop(): Promise<void>;
}> {
  const dir = tempDir('rbench');
  const clove = path.join(REPO_ROOT, 'bin', 'clove.js');
  const tokenOf = (...a: string[]) =>
    execFileSync(process.execPath, [clove, 'relay', '--data-dir', dir, 'token', 'add', ...a], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  const machineTokenFile = path.join(dir, 'machine-token');
  fs.writeFileSync(machineTokenFile, `${tokenOf('--machine', 'bench')}\n`, { mode: 0o600 });
  const userToken = tokenOf('--user', 'bench');
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [clove, 'relay', '--listen', `127.0.0.1:${port}`, '--data-dir', dir, '--log-level', 'warn'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await waitForPort(port, 15_000, exited);
  return {
    url: `http://127.0.0.1:${port}`,
    machineTokenFile,
    userToken,
    dir,
    stop: async () => {
      await stopChild(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const machine = machineInfo();
  const relay = await startRelay();
  const k = await startKernel({
    extra: [
      '--http',
      '127.0.0.1:0',
      '--log-format',
      'json',
      '--log-level',
      'info',
      '--relay',
      relay.url,
      '--machine-id',
      'bench',
      '--relay-token-file',
      relay.machineTokenFile,
    ],
  });
  const rows: Row[] = [];
  try {
    const { url, token } = await apiOf(k);
    const headers = { authorization: `Bearer ${token}` };
    for (let i = 0; i < AGENTS; i++) {
      const res = await fetch(`${url}/api/v1/agents`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ command: ['sleep', '1000000'], name: `bench-${i}` }),
      });
      if (res.status !== 201) throw new Error(`spawn ${i}: ${res.status} ${await res.text()}`);
    }
    const listed = (await (await fetch(`${url}/api/v1/agents`, { headers })).json()) as unknown[];
    if (listed.length !== AGENTS)
      throw new Error(`expected ${AGENTS} agents, the API lists ${listed.length}`);
    const TARGETS: Target[] = [
      { name: 'GET /api/v1/agents', via: 'kernel', url: `${url}/api/v1/agents`, headers },
      { name: 'GET /metrics', via: 'kernel', url: `${url}/metrics`, headers },
      { name: 'GET /healthz', via: 'kernel', url: `${url}/healthz`, headers: {} },
    ];
    // The relay's rows: the same paths, relay → tunnel → this kernel; and the relay's own fleet view.
    const viaRelay = 'relay → tunnel → kernel';
    const userHeaders = { authorization: `Bearer ${relay.userToken}` };
    const base = `${relay.url}/api/v1/machines/bench`;
    await until(
      async () => (await fetch(`${base}/agents`, { headers: userHeaders })).status === 200,
      30_000,
      'the kernel to be reachable through the relay',
    );
    TARGETS.push(
      { name: 'GET /api/v1/agents', via: viaRelay, url: `${base}/agents`, headers: userHeaders },
      { name: 'GET /api/v1/system', via: viaRelay, url: `${base}/system`, headers: userHeaders },
      {
        name: 'GET /api/v1/machines',
        via: 'relay',
        url: `${relay.url}/api/v1/machines`,
        headers: userHeaders,
      },
      { name: 'GET /healthz', via: 'relay', url: `${relay.url}/healthz`, headers: {} },
    );
    rows.push(...(await measure(TARGETS)));
  } finally {
    await k.stop();
    await relay.stop();
  }
  const env = envelope('http', {
    quick: QUICK,
    machine,
    startedAt: t0,
    results: { agents: AGENTS, rows },
    extraArgs: givenFlags(flags, ['agents', 'seconds', 'connections']),
  });
  writeJson('http', env);
  const md = [
    '# HTTP API throughput',
    '',
    `Machine: ${machineLine(machine)}; load average at end ${env.loadavg_at_end.join(' / ')}.`,
    '',
    `Reproduce: \`${env.command}\` (${env.duration_s} s).`,
    '',
    `autocannon ${CONNECTIONS} connections for ${SECONDS} s per row, one row at a time, against a kernel process`,
    `(\`clove kernel --http 127.0.0.1:0\`) running ${AGENTS} sandboxed agents (\`sleep\`), spawned through`,
    '`POST /api/v1/agents`. `GET /api/v1/agents` and `GET /metrics` run LIST on every request and join it with',
    "the agents' measured figures (METRICS_ALL_AGENTS: each agent's cgroup and /proc files), taken at most once",
    'a second and shared by every request; `/metrics` also renders ~15 series per agent and the process metrics.',
    '`/healthz` is the bare HTTP stack (Hono on @hono/node-server).',
    '',
    'Rows via `relay → tunnel → kernel`: the same kernel dialled out to a relay process (`clove relay`, on this',
    'machine), and autocannon calls the relay with a user token; each request crosses the relay, one WebSocket',
    "(the tunnel, JSON messages with base64 bodies) and the kernel's API app. `via relay` rows are the relay alone.",
    '',
    mdTable(
      [
        'row',
        'via',
        'req/s',
        'p50 ms',
        'p90 ms',
        'p99 ms',
        'max ms',
        'MB/s',
        'requests',
        'errors',
        'non-2xx',
      ],
      rows.map((x) => [
        x.name,
        x.via,
        x.rps,
        x.p50_ms,
        x.p90_ms,
        x.p99_ms,
        x.max_ms,
        x.mb_per_s,
        x.requests,
        x.errors,
        x.non2xx,
      ]),
    ),
    '',
  ].join('\n');
  writeText('http.md', md);
  console.log(md);
}

// Run as a program (not when the relay's bench imports `measure`).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
