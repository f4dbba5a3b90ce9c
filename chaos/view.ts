/** The live terminal view of a chaos run (a grid of agents colored by state) and the summary table. */
import Table from 'cli-table3';
import type { ClusterChaosResult, ClusterLiveView } from './cluster.js';
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
  if (a.state === 'RUNNING') return a.hit ? color.cyan('↻') : a.fault ? color.green('◆') : color.green('●');
  return stateCell(a.state);
}

/** An agent in any state but RUNNING (whose mark says more: faulted, moved, restarted). */
function stateCell(state: string): string {
  switch (state) {
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

function clusterCell(a: ClusterLiveView['agents'][number]): string {
  if (a.victim && !a.serving) return a.state === 'RUNNING' && a.moved ? color.blue('◐') : color.red('✖');
  if (a.state === 'RUNNING')
    return a.moved ? color.cyan('↻') : a.victim ? color.green('◆') : color.green('●');
  return stateCell(a.state);
}

export interface ClusterViewHeader {
  nodes: number;
  agents: number;
  fault: string;
  provider: string;
  seed: number;
}

const nodeStatus: Record<ClusterLiveView['nodes'][number]['status'], (s: string) => string> = {
  live: color.green,
  killed: color.red,
  isolated: color.yellow,
  rejoined: color.cyan,
};

/** One frame of the cluster chaos view: a block per node with the agents running there now. */
export function renderClusterFrame(h: ClusterViewHeader, v: ClusterLiveView, perRow = 25): string {
  const lines: string[] = [];
  const py = v.agents.filter((a) => a.runtime === 'python').length;
  lines.push(
    `${color.bold('Clove chaos across nodes')}  ${h.nodes} nodes (${h.provider})  ${h.agents} agents (${py} python, ${h.agents - py} node)  ${h.fault}  seed ${h.seed}`,
  );
  lines.push(
    `${color.gray('phase')} ${color.bold(v.phase.padEnd(12))}  ${color.gray('t')} ${(v.elapsedMs / 1000).toFixed(1).padStart(5)} s`,
  );
  lines.push('');
  for (const n of v.nodes) {
    const here = v.agents.filter((a) =>
      n.status === 'killed' ? a.home === n.name && !a.moved : a.node === n.name,
    );
    lines.push(
      `  ${color.bold(n.name.padEnd(8))} ${nodeStatus[n.status](n.status.padEnd(8))}${n.collector ? color.gray(' collector') : ''}  ${color.gray(`${here.length} agents`)}`,
    );
    for (let i = 0; i < here.length; i += perRow)
      lines.push(
        `    ${here
          .slice(i, i + perRow)
          .map(clusterCell)
          .join(' ')}`,
      );
  }
  lines.push('');
  lines.push(
    `  moved & serving ${v.rescheduled}/${v.victims}   two owners ${v.doubleOwners ? color.red(String(v.doubleOwners)) : '0'}   messages sent ${v.sent}  delivered ${v.delivered}`,
  );
  lines.push(
    color.gray(
      `  ● running  ◆ on the node to fault  ✖ down  ◐ starting elsewhere  ↻ moved & serving  · stopped`,
    ),
  );
  return lines.join('\n');
}

/** The end-of-run summary table of a cluster chaos run. */
export function renderClusterSummary(r: ClusterChaosResult): string {
  const t = new Table({ head: ['', 'value'], style: { head: [], border: [] } });
  const moves = new Map<string, number>();
  for (const m of r.moved)
    moves.set(`${m.from} → ${m.to ?? '?'}`, (moves.get(`${m.from} → ${m.to ?? '?'}`) ?? 0) + 1);
  t.push(
    ['nodes', `${r.nodes} (${r.provider}): ${r.node_names.join(' ')}; collector on ${r.collector_node}`],
    ['agents', `${r.agents} (${r.runtimes.python} python, ${r.runtimes.node} node)`],
    ['fault', `${r.fault} ${r.faulted_nodes.join(' ')} (lease TTL ${r.lease_ttl_s} s)`],
    [
      'agents moved & serving',
      `${r.rescheduled} / ${r.victims}  (${[...moves].map(([k, n]) => `${k} ×${n}`).join(', ')})`,
    ],
    ['survivors undisturbed', `${r.survivors_undisturbed} / ${r.survivors}`],
    ['two owners of a name', `${r.double_owners.length} (${r.owner_samples} LIST samples)`],
    ['messages sent', String(r.messages_sent)],
    ['messages delivered', String(r.messages_delivered)],
    ['messages lost', String(r.messages_lost)],
    ['lost with the node (Limits)', String(r.messages_lost_with_node)],
    ['redelivered (deduplicated)', String(r.duplicates_redelivered)],
    ['delivered after the ack wait', String(r.delivered_after_ack_wait)],
    ['SENDs refused not_found', String(r.sends_refused_not_found)],
    ['refused at start (name not seen yet)', String(r.sends_refused_at_start)],
    [
      'fault → serving p50 / p95 / max',
      `${ms(r.takeover_ms.p50)} / ${ms(r.takeover_ms.p95)} / ${ms(r.takeover_ms.max)}`,
    ],
  );
  t.push([
    'lease losses',
    r.lease_losses.map((l) => `${l.node} at ${(l.at_ms / 1000).toFixed(1)} s`).join(', ') || 'none',
  ]);
  if (r.rejoined !== null) t.push(['rejoined', r.rejoined ? 'yes, holding none of its old names' : 'no']);
  t.push(
    ['machine', `${r.machine.cores} cores, Linux ${r.machine.kernel_release}, Node ${r.machine.node}`],
    ['verdict', r.ok ? color.green('PASS') : color.red('FAIL')],
  );
  const out = [t.toString()];
  for (const f of r.failures) out.push(color.red(`  ✖ ${f}`));
  if (r.messages_lost_with_node)
    out.push(
      color.gray(
        `  note: ${r.messages_lost_with_node} messages were acknowledged into the memory of ${r.faulted_nodes.join(', ')} before the fault (docs/cluster.md Limits)`,
      ),
    );
  return out.join('\n');
}
