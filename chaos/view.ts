/** The live terminal view of a chaos run (a grid of agents colored by state) and the summary table. */
import Table from 'cli-table3';
import type { ChaosResult, LiveView } from './run.js';

const ESC = '\u001b[';
export const color = {
  green: (s: string) => `${ESC}32m${s}${ESC}0m`,
  cyan: (s: string) => `${ESC}36m${s}${ESC}0m`,
  yellow: (s: string) => `${ESC}33m${s}${ESC}0m`,
  blue: (s: string) => `${ESC}34m${s}${ESC}0m`,
  red: (s: string) => `${ESC}31m${s}${ESC}0m`,
  magenta: (s: string) => `${ESC}35m${s}${ESC}0m`,
  gray: (s: string) => `${ESC}90m${s}${ESC}0m`,
  bold: (s: string) => `${ESC}1m${s}${ESC}0m`,
};

function cell(a: LiveView['agents'][number]): string {
  // A faulted agent that is not serving again yet: dead/dying (red) or restarted but still booting (blue).
  if (a.hit && !a.serving) return a.state === 'RUNNING' && a.restarts > 0 ? color.blue('◐') : color.red('✖');
  switch (a.state) {
    case 'RUNNING':
      return a.hit ? color.cyan('↻') : a.fault ? color.green('◆') : color.green('●');
    case 'STARTING':
      return color.blue('◐');
    case 'BACKOFF':
      return color.yellow('○');
    case 'STOPPING':
      return color.magenta('◌');
    case 'PAUSED':
      return color.magenta('‖');
    case 'FAILED':
      return color.red('▣');
    default:
      return color.gray('·');
  }
}

export interface ViewHeader {
  agents: number;
  fault: string;
  faults: number;
  seed: number;
}

/** One frame of the live view (plain text with ANSI colors; lines joined by "\n"). */
export function renderFrame(h: ViewHeader, v: LiveView, perRow = 25): string {
  const lines: string[] = [];
  const py = v.agents.filter((a) => a.runtime === 'python').length;
  lines.push(
    `${color.bold('Clove chaos')}  ${h.agents} agents (${py} python, ${h.agents - py} node)  fault ${h.fault} ×${h.faults}  seed ${h.seed}`,
  );
  lines.push(
    `${color.gray('phase')} ${color.bold(v.phase.padEnd(10))}  ${color.gray('t')} ${(v.elapsedMs / 1000).toFixed(1).padStart(5)} s`,
  );
  lines.push('');
  for (let i = 0; i < v.agents.length; i += perRow) {
    const row = v.agents.slice(i, i + perRow);
    lines.push(`  ${color.gray(String(i).padStart(3))}  ${row.map(cell).join(' ')}`);
  }
  lines.push('');
  const by: Record<string, number> = {};
  for (const a of v.agents) by[a.state] = (by[a.state] ?? 0) + 1;
  const states = ['RUNNING', 'STARTING', 'BACKOFF', 'STOPPING', 'FAILED']
    .map((s) => `${s} ${String(by[s] ?? 0).padStart(3)}`)
    .join('  ');
  lines.push(`  ${states}`);
  lines.push(
    `  faults ${v.faultsInjected}/${h.faults}   back & serving ${v.recovered}/${h.faults}   messages sent ${v.sent}  delivered ${v.delivered}`,
  );
  lines.push(
    color.gray(
      `  ● running  ◆ victim-to-be  ✖ hit, down  ◐ restarting  ↻ back & serving  ○ backoff  ▣ failed  · stopped`,
    ),
  );
  return lines.join('\n');
}

const ms = (x: number | null) => (x === null ? '-' : `${x} ms`);

/** The end-of-run summary table. */
export function renderSummary(r: ChaosResult): string {
  const t = new Table({ head: ['', 'value'], style: { head: [], border: [] } });
  const kinds = Object.entries(r.faults.by_kind)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  t.push(
    ['agents', `${r.agents} (${r.runtimes.python} python, ${r.runtimes.node} node)`],
    ['faults injected', `${r.faults.total} (${kinds || 'none'})`],
    ['survivors undisturbed', `${r.survivors_undisturbed} / ${r.survivors}`],
    ['agents restarted', `${r.restarted} / ${r.faults.total}`],
    ['messages sent', String(r.messages_sent)],
    ['messages delivered', String(r.messages_delivered)],
    ['messages lost', String(r.messages_lost)],
    ['redelivered (deduplicated)', String(r.duplicates_redelivered)],
    [
      'restart p50 / p95 / max',
      `${ms(r.restart_ms.p50)} / ${ms(r.restart_ms.p95)} / ${ms(r.restart_ms.max)}`,
    ],
  );
  for (const [k, s] of Object.entries(r.restart_ms_by_kind)) {
    const exits = Object.entries(r.exits_by_kind[k] ?? {})
      .map(([how, n]) => `${how}×${n}`)
      .join(' ');
    t.push([`  ${k}`, `p50 ${ms(s.p50)}  max ${ms(s.max)}  (${exits})`]);
  }
  t.push(
    ['sandbox', `memory ${r.sandbox.memory}  pids ${r.sandbox.pids}  cpu ${r.sandbox.cpu}`],
    ['machine', `${r.machine.cores} cores, Linux ${r.machine.kernel_release}, Node ${r.machine.node}`],
    ['verdict', r.ok ? color.green('PASS') : color.red('FAIL')],
  );
  const out = [t.toString()];
  for (const f of r.failures) out.push(color.red(`  ✖ ${f}`));
  const notes = [...new Set(r.fault_records.flatMap((f) => (f.note ? [`${f.kind}: ${f.note}`] : [])))];
  for (const n of notes) out.push(color.gray(`  note ${n}`));
  return out.join('\n');
}
