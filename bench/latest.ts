/**
 * Writes reports/latest.md: the headline numbers of every report whose JSON is in reports/ (ours:
 * ipc, messaging, restart, memory, cpu; the other engineers': rivals, spawn-latency, chaos-*), each with the
 * machine it ran on and the exact command that reproduces it.
 *
 *   npm run build && node dist/bench/latest.js
 */
import fs from 'node:fs';
import path from 'node:path';
import { machineLine, type MachineInfo } from './lib/machine.js';
import { cpuPerMessage, SIZE_LABEL, type Cell } from './messaging.js';
import { r } from './lib/stats.js';
import { REPORTS_DIR, mdTable, writeText } from './lib/report.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function load(name: string): Json | null {
  const f = path.join(REPORTS_DIR, name);
  try {
    return JSON.parse(fs.readFileSync(f, 'utf8')) as Json;
  } catch {
    return null;
  }
}

const yes = (b: boolean | null | undefined) => (b === true ? 'met' : b === false ? '**NOT met**' : 'n/a');

function ours(j: Json): string {
  const m = j.machine as MachineInfo;
  return `${j.quick ? 'quick run; ' : ''}${machineLine(m)}; load at end ${(j.loadavg_at_end as number[]).join(' / ')}`;
}

function section(): string[] {
  const out: string[] = [];
  const rows: (string | number)[][] = [];
  const ipc = load('ipc.json');
  const restart = load('restart.json');
  const memory = load('memory.json');
  const cpu = load('cpu.json');
  const messaging = load('messaging.json');

  if (ipc) {
    const h = ipc.results.headline;
    rows.push([
      'IPC relay round trip A→B→A (blocking RECV both sides)',
      `p50 ${h.relay_rtt_p50_us} µs, p99 ${h.relay_rtt_p99_us} µs`,
      '—',
      `[ipc](ipc.md)`,
    ]);
    rows.push([
      'IPC NOOP round trip (kernel) vs direct Unix socket',
      `p50 ${h.noop_rtt_p50_us} µs vs ${h.direct_rtt_p50_us} µs; p99 ${h.noop_rtt_p99_us} vs ${h.direct_rtt_p99_us} µs`,
      '—',
      `[ipc](ipc.md)`,
    ]);
    rows.push([
      'IPC pipelined throughput',
      `${h.relay_pipelined_msgs_per_s.toLocaleString('en-US')} msg/s A→B; NOOP ${h.noop_pipelined_msgs_per_s.toLocaleString('en-US')}/s; direct ${h.direct_pipelined_msgs_per_s.toLocaleString('en-US')}/s`,
      '—',
      `[ipc](ipc.md)`,
    ]);
  }
  if (messaging) {
    const cells = messaging.results.cells as Json[];
    const name = (s: string) => String(messaging.results.setup.systems[s] ?? s).replace(/ \(.*\)$/, '');
    const at = (s: string, size: number, shape: string) =>
      cells.find((c) => c.system === s && c.size === size && `${c.pairs}→${c.pairs}` === shape);
    // The judged SEND_BATCH rows (answered, unanswered): the one that met the most goals gives the lines.
    const goals = (s: string) => (messaging.results.goals?.[s] ?? []) as Json[];
    const met = (s: string) => goals(s).filter((x) => x.met).length;
    const judged = ['clove-fast-batch', 'clove-fast-batch-quiet'].filter((s) => goals(s).length > 0);
    const mine = [...judged].sort((a, b) => met(b) - met(a))[0] ?? 'clove-fast-batch';
    for (const shape of messaging.results.setup.shapes as string[])
      for (const size of messaging.results.setup.sizes as number[]) {
        const line = (s: string) => {
          const c = at(s, size, shape);
          if (!c) return null;
          // As messaging.md's CPU table adds it up: broker and clients per message, each rounded.
          const u = c.cpu ? cpuPerMessage(c as Cell) : null;
          const cpuUs = u ? `, ${r(u.broker_us + u.clients_us)} µs CPU/msg` : '';
          const label = { nats: 'NATS', redis: 'Redis', 'relay-c': 'C relay' }[s] ?? name(s);
          return `${label} ${c.msgs_per_s.toLocaleString('en-US')} msgs/s, p50 ${c.rtt_us.p50} µs${cpuUs}`;
        };
        const parts = [mine, 'nats', 'redis', 'relay-c'].map(line).filter((x) => x !== null);
        if (!at(mine, size, shape)) continue;
        rows.push([
          `Messages through the kernel, ${SIZE_LABEL(size)} ${shape}`,
          parts.join('; '),
          '—',
          '[messaging](messaging.md)',
        ]);
      }
    for (const s of judged) {
      const g = goals(s);
      rows.push([
        `Issue 12's messaging goals (${name(s)})`,
        `${met(s)} of ${g.length} met; not met: ${
          g
            .filter((x) => !x.met)
            .map((x) => x.goal)
            .join('; ') || 'none'
        }`,
        'all',
        '[messaging](messaging.md)',
      ]);
    }
  }
  if (restart) {
    const g = restart.results.goal;
    const s = Object.fromEntries((restart.results.series as Json[]).map((x) => [x.name, x.restart_ms]));
    const b = restart.results.bare_start as Json[];
    const fmt = (k: string) => (s[k] ? `${k} p50 ${s[k].p50} / p95 ${s[k].p95} ms` : `${k} not run`);
    if (g)
      rows.push([
        'Restart: SIGKILL → Python agent ready (default sandboxed)',
        `${fmt('clove/kernel')}; bare \`python -c pass\` p50 ${b[0].start_ms.p50} / p95 ${b[0].start_ms.p95} ms (${g.ratio_p50_to_bare_p50 ?? '?'}× / ${g.ratio_p95_to_bare_p95}×)`,
        `p50 and p95 ≤ 1.1 × bare: ${yes(g.meets_bare_goal)}`,
        '[restart](restart.md)',
      ]);
    if (g?.clove_sdk_p95_ms != null)
      rows.push([
        'Restart through the Python SDK (default sandboxed)',
        `${fmt('clove/sdk')} (${g.sdk_ratio_p50_to_bare_p50 ?? '?'}× bare p50, ${g.sdk_ratio_p95_to_bare_p95}× bare p95)`,
        `p50 and p95 ≤ 1.1 × bare: ${yes(g.meets_sdk_goal)}`,
        '[restart](restart.md)',
      ]);
    const sg = restart.results.standby_goal;
    if (sg)
      rows.push([
        'Warm standby: SIGKILL → promoted process serving',
        `${fmt('clove/standby')}; ${fmt('clove/plain-standby')}`,
        `promotion p95 ≤ 5 ms: ${yes(sg.met)}`,
        '[restart](restart.md)',
      ]);
    rows.push([
      'Restart vs PM2 (plain processes, same script, same socket signal)',
      `${fmt('clove/plain-socket')}; ${fmt('pm2/socket')}`,
      `faster than PM2: ${yes(g?.faster_than_pm2_same_signal)}`,
      '[restart](restart.md)',
    ]);
    rows.push([
      'Bare starts (same run)',
      b
        .slice(0, 3)
        .map((x) => `\`${String(x.name).replace(/^\S*\/python3 /, 'python ')}\` p50 ${x.start_ms.p50} ms`)
        .join('; '),
      '—',
      '[restart](restart.md)',
    ]);
  }
  if (memory) {
    const m = memory.results;
    for (const c of (m.configs ?? [{ ...m, sandbox: 'auto' }]) as Json[]) {
      const last = c.points[c.points.length - 1];
      if (!last) continue;
      const err = c.error ? `; **stopped**: ${String(c.error).slice(0, 140)}` : '';
      rows.push([
        `Kernel memory per idle agent, \`--sandbox ${c.sandbox}\` (0…${last.agents} agents)`,
        `${c.kib_per_agent} KiB/agent (r² ${c.r2}); ${r(last.vm_rss_kib / 1024)} MiB RSS at ${last.agents}${err}`,
        `≤ ${m.goal_kib_per_agent} KiB: ${yes(c.meets_goal)}`,
        '[memory](memory.md)',
      ]);
    }
  }
  if (cpu) {
    const c0 = cpu.results;
    for (const c of (c0.configs ?? [{ ...c0, sandbox: 'auto' }]) as Json[]) {
      rows.push([
        `Kernel CPU, \`--sandbox ${c.sandbox}\`, ${c.agents} idle agents, ${c0.setup.window_s} s`,
        `${c.percent_of_one_core} % of one core (0 agents: ${c.windows[0].percent_of_one_core} %)`,
        `≤ ${c0.goal_percent} %: ${yes(c.meets_goal)}`,
        '[cpu](cpu.md)',
      ]);
    }
  }
  if (rows.length) {
    out.push('## Kernel performance (bench/)', '', mdTable(['what', 'result', 'goal', 'report'], rows), '');
    out.push('| report | reproduce | machine |', '| --- | --- | --- |');
    for (const [n, j] of [
      ['ipc', ipc],
      ['messaging', messaging],
      ['restart', restart],
      ['memory', memory],
      ['cpu', cpu],
    ] as const) {
      if (j) out.push(`| [${n}](${n}.md) | \`${j.command}\` (${j.duration_s} s) | ${ours(j)} |`);
    }
    out.push('');
  }
  return out;
}

function others(): string[] {
  const out: string[] = [];
  const sl = load('spawn-latency.json');
  if (sl) {
    const m = sl.machine ?? {};
    out.push('## Spawn latency (bench/spawn-latency.ts)', '');
    out.push(
      `Reproduce: \`npm run bench:spawn\`; ${sl.date ?? ''}; ${m.cores ?? '?'} cores ${m.cpu_model ?? ''}, Linux ${m.kernel ?? ''}, Node ${m.node ?? ''}, load ${m.load_avg_1m_before ?? '?'}. [Full report](spawn-latency.md).`,
      '',
    );
    const res = (sl.results ?? {}) as Record<string, Json>;
    out.push(
      mdTable(
        ['kind', 'p50 ms', 'p99 ms', 'measured'],
        Object.entries(res).map(([k, v]) => [k, v.p50, v.p99, v.what ?? '']),
      ),
      '',
    );
  }
  const rv = load('rivals.json');
  if (rv) {
    out.push('## Rivals under fault (bench/rivals/)', '');
    out.push(
      `Reproduce: \`${rv.command ?? 'python3 bench/rivals/run.py'}\`; generated ${rv.generated_at ?? ''}. [Full report](rivals.md).`,
      '',
    );
    const md = safeRead('rivals.md');
    const sum = md && /## Summary[^\n]*\n([\s\S]*?)(\n## |$)/.exec(md);
    if (sum) out.push(sum[1].trim(), '');
  }
  const chaos = fs.existsSync(REPORTS_DIR)
    ? fs
        .readdirSync(REPORTS_DIR)
        .filter((f) => /^chaos-.*\.json$/.test(f))
        .sort()
    : [];
  if (chaos.length) {
    out.push('## Chaos runs (chaos/)', '');
    for (const f of chaos) {
      const j = load(f) ?? {};
      const mdName = f.replace(/\.json$/, '.md');
      const link = fs.existsSync(path.join(REPORTS_DIR, mdName)) ? `[${mdName}](${mdName})` : `[${f}](${f})`;
      const when = j.date ?? j.generated_at ?? j.machine?.date ?? '';
      const cmd = j.command ? `\`${j.command}\`` : '';
      const verdict =
        j.verdict !== undefined ? ` verdict: \`${JSON.stringify(j.verdict).slice(0, 160)}\`` : '';
      out.push(`- ${link} ${when} ${cmd}${verdict}`);
    }
    out.push('');
  }
  return out;
}

function safeRead(f: string): string | null {
  try {
    return fs.readFileSync(path.join(REPORTS_DIR, f), 'utf8');
  } catch {
    return null;
  }
}

const md = [
  '# Latest benchmark results',
  '',
  'Generated by `node dist/bench/latest.js` (run by `npm run bench`, `npm run bench:quick` and `ci/bench-quick.sh`) from the JSON',
  'reports in this directory. Every number comes from a script in `bench/` (or `chaos/`) that anyone can rerun; each report',
  'says on which machine and under which load it ran. The machine is shared with other work: compare numbers of the same run.',
  '',
  ...section(),
  ...others(),
].join('\n');
writeText('latest.md', md);
console.log(md);
