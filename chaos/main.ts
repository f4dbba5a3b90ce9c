/**
 * `npm run chaos -- --agents 100 --kill 20`: the sales proof, live. Starts a kernel, a swarm of Python
 * and Node agents exchanging numbered messages, kills (or otherwise faults) seeded-random victims, and
 * verifies: survivors undisturbed, victims restarted and serving, no message lost. Exit code 0 only
 * if every invariant holds; `--json` prints one JSON object as the last line.
 *
 * `npm run chaos -- --nodes 3 --agents 150 --kill-node 1` (or `--partition`): the same across a cluster
 * of kernels (chaos/cluster.ts, docs/cluster.md "Chaos across nodes").
 *
 * `npm run chaos -- --kernel-kill --agents 50`: SIGKILL the kernel itself under load and start a new one
 * (chaos/kernel-restart.ts, docs/restart.md): every agent keeps its pid, nothing acknowledged is lost.
 */
import { Command, InvalidArgumentError } from 'commander';
import { createLogUpdate } from 'log-update';
import { FAULT_KINDS, isFaultKind, type FaultKind } from '../harness/faults.js';
import { closeAllClusters } from '../harness/clusterswarm.js';
import { closeAllSwarms } from '../harness/swarm.js';
import { CastRecorder, castToSvg } from './cast.js';
import { runClusterChaos, type ClusterChaosResult } from './cluster.js';
import { runChaos, type ChaosResult } from './run.js';
import { runKernelRestart } from './kernel-restart.js';
import {
  renderClusterFrame,
  renderClusterSummary,
  renderFrame,
  renderSummary,
  type ViewHeader,
} from './view.js';

function int(min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`must be an integer >= ${min}`);
    return n;
  };
}

const program = new Command()
  .name('chaos')
  .description(
    'Chaos run against a Clove kernel: fault agents of a live swarm and verify the others carry on.',
  )
  .option('--agents <n>', 'agents in the swarm', int(2), 100)
  .option('--kill <n>', 'how many agents get a fault', int(0), 20)
  .option('--fault <kind>', `fault kind: ${FAULT_KINDS.join(', ')} or mixed`, 'sigkill')
  .option('--duration <s>', 'minimum seconds of traffic (a third before the faults)', int(1), 12)
  .option('--seed <n>', 'seed for choosing victims', int(0), 1)
  .option('--interval <ms>', "each agent's send interval", int(10), 500)
  .option('--node-every <k>', 'every k-th agent is a Node agent (0: Python only)', int(0), 5)
  .option('--timeout <s>', 'upper bound of every wait', int(5), 120)
  .option('--watchdog-ms <ms>', 'watchdog of hang/cpu victims', int(100), 1500)
  .option(
    '--kernel <mode>',
    'process: the kernel as a child process (the real daemon); inproc: inside this process',
    'process',
  )
  .option('--sandbox <mode>', "the kernel's --sandbox: auto, native or off", 'auto')
  .option('--fast-path', "the kernel's --fast-path: connections and messages in the native reactor")
  .option('--json', 'print the result as one JSON object on the last line')
  .option('--record <file.cast>', 'record the live view as an asciicast v2 file')
  .option('--svg <file.svg>', 'render the recording as an animated SVG (svg-term)')
  .option('--no-live', 'no live view (progress lines on stderr instead)')
  .option('--nodes <n>', 'a cluster of n kernels on etcd and NATS (docs/cluster.md): node faults', int(2))
  .option('--kill-node <k>', 'with --nodes: kill k nodes (never the collector’s) after the warm-up', int(1))
  .option('--partition', 'with --nodes: isolate one node past its lease TTL, then rejoin it')
  .option(
    '--kernel-kill',
    'SIGKILL the kernel under load, start a new one; agents must carry on (docs/restart.md)',
  )
  .option('--provider <kind>', 'with --nodes: processes (kernels as child processes) or docker', 'processes')
  .option(
    '--lease-ttl <s>',
    "with --nodes: the kernels' --lease-ttl (3 s is enough for a small swarm; a loaded machine needs more)",
    int(2),
    10,
  );

program.parse();
const o = program.opts<{
  agents: number;
  kill: number;
  fault: string;
  duration: number;
  seed: number;
  interval: number;
  nodeEvery: number;
  timeout: number;
  watchdogMs: number;
  kernel: string;
  sandbox: string;
  fastPath?: boolean;
  json?: boolean;
  record?: string;
  svg?: string;
  live: boolean;
  nodes?: number;
  killNode?: number;
  partition?: boolean;
  kernelKill?: boolean;
  provider: string;
  leaseTtl: number;
}>();

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    process.stderr.write(`\n${sig}: stopping the kernels and every agent…\n`);
    void Promise.allSettled([closeAllSwarms(), closeAllClusters()]).finally(() => process.exit(130));
  });
}

if (o.kernelKill) await kernelKillMain();
if (o.nodes !== undefined) await clusterMain(o.nodes);
else if (o.killNode !== undefined || o.partition)
  program.error('--kill-node and --partition are node faults: give --nodes too');

/** The kernel-restart run (--kernel-kill): progress lines on stderr, a summary, JSON; exits the process. */
async function kernelKillMain(): Promise<never> {
  if (o.nodes !== undefined) program.error('--kernel-kill restarts one kernel; leave out --nodes');
  if (!['auto', 'native', 'off'].includes(o.sandbox)) program.error('--sandbox must be auto, native or off');
  const src = (k: string) => program.getOptionValueSource(k);
  const third = Math.max(1, Math.round(o.duration / 3));
  try {
    const r = await runKernelRestart({
      agents: src('agents') === 'cli' ? o.agents : 50,
      intervalMs: src('interval') === 'cli' ? o.interval : 50,
      beforeS: third,
      afterS: third,
      downMs: 500,
      sandbox: o.sandbox as 'auto' | 'native' | 'off',
      fastPath: o.fastPath === true,
      timeoutS: o.timeout,
      log: (l) => process.stderr.write(`${l}\n`),
    });
    process.stdout.write(
      [
        `kernel SIGKILLed under ${r.agents} agents; a new kernel listened after ${r.kernel_down_ms} ms`,
        `  agents alive while no kernel ran: ${r.alive_without_kernel}/${r.agents}`,
        `  re-adopted with their pid:        ${r.pids_kept}/${r.agents} (all listed after ${r.readopt_ms} ms)`,
        `  acknowledged messages:            ${r.acknowledged}, delivered ${r.delivered}, lost ${r.lost}, duplicates ${r.duplicates}`,
        `  sent after the restart:           ${r.acknowledged_after_restart}`,
        `  errors seen by agents' SDK calls: ${r.sdk_errors}`,
        r.ok ? 'OK' : `FAILED: ${r.failures.join('; ')}`,
        '',
      ].join('\n'),
    );
    if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
    process.exit(r.ok ? 0 : 1);
  } catch (e) {
    process.stderr.write(`chaos run failed: ${(e as Error).stack ?? e}\n`);
    process.exit(2);
  }
}

/** The cluster run (--nodes): its own view, summary and JSON; exits the process. */
async function clusterMain(nodes: number): Promise<never> {
  const src = (k: string) => program.getOptionValueSource(k);
  if (src('kill') === 'cli' || src('fault') === 'cli')
    program.error(
      '--kill and --fault fault agents of one kernel; with --nodes use --kill-node or --partition',
    );
  if (o.partition && o.killNode !== undefined) program.error('give --kill-node or --partition, not both');
  if (o.provider !== 'processes' && o.provider !== 'docker')
    program.error('--provider must be processes or docker');
  if (o.kernel !== 'process') program.error('--kernel inproc is for one kernel; cluster nodes are processes');
  if (!['auto', 'native', 'off'].includes(o.sandbox)) program.error('--sandbox must be auto, native or off');
  const killNodes = o.killNode ?? 1;
  if (!o.partition && killNodes > nodes - 1)
    program.error(
      `--kill-node ${killNodes}: at most ${nodes - 1} of ${nodes} nodes (the collector's survives)`,
    );
  const fault = o.partition ? 'partition' : 'kill-node';
  const header = {
    nodes,
    agents: o.agents,
    fault: o.partition ? 'partition' : `kill-node ${killNodes}`,
    provider: o.provider,
    seed: o.seed,
  };
  const live = o.live && process.stdout.isTTY === true;
  const recorder =
    o.record || o.svg
      ? new CastRecorder(80, 24, `clove chaos: ${nodes} nodes, ${o.agents} agents, ${header.fault}`)
      : null;
  const logUpdate = live ? createLogUpdate(process.stdout) : null;
  let result: ClusterChaosResult;
  try {
    result = await runClusterChaos({
      nodes,
      agents: o.agents,
      fault,
      killNodes,
      provider: o.provider as 'processes' | 'docker',
      leaseTtlS: o.leaseTtl,
      durationS: o.duration,
      seed: o.seed,
      intervalMs: o.interval,
      nodeEvery: o.nodeEvery,
      sandbox: o.sandbox as 'auto' | 'native' | 'off',
      fastPath: o.fastPath === true,
      timeoutS: o.timeout,
      ...viewHooks(live, recorder, logUpdate, (v) => [renderClusterFrame(header, v), v.phase === 'done']),
    });
  } catch (e) {
    logUpdate?.done();
    process.stderr.write(`chaos run failed: ${(e as Error).stack ?? e}\n`);
    await Promise.allSettled([closeAllSwarms(), closeAllClusters()]);
    process.exit(2);
  }
  logUpdate?.done();
  const summary = renderClusterSummary(result);
  process.stdout.write(`\n${summary}\n`);
  if (recorder) {
    recorder.print(summary);
    if (o.record) recorder.save(o.record);
    if (o.svg) await castToSvg(recorder.toString(), o.svg);
    process.stderr.write(`recorded${o.record ? ` ${o.record}` : ''}${o.svg ? ` ${o.svg}` : ''}\n`);
  }
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(result.ok ? 0 : 1);
}

if (o.fault !== 'mixed' && !isFaultKind(o.fault))
  program.error(`unknown fault kind ${o.fault} (${FAULT_KINDS.join(', ')}, mixed)`);
if (o.kernel !== 'process' && o.kernel !== 'inproc') program.error(`--kernel must be process or inproc`);
if (!['auto', 'native', 'off'].includes(o.sandbox)) program.error('--sandbox must be auto, native or off');
if (o.kill > o.agents) program.error(`--kill ${o.kill} is more than --agents ${o.agents}`);

const header: ViewHeader = { agents: o.agents, fault: o.fault, faults: o.kill, seed: o.seed };
const live = o.live && process.stdout.isTTY === true;
const recorder =
  o.record || o.svg
    ? new CastRecorder(80, 24, `clove chaos: ${o.agents} agents, ${o.kill} × ${o.fault}`)
    : null;
const logUpdate = live ? createLogUpdate(process.stdout) : null;

let result: ChaosResult;
try {
  result = await runChaos({
    agents: o.agents,
    faults: o.kill,
    fault: o.fault as FaultKind | 'mixed',
    durationS: o.duration,
    seed: o.seed,
    intervalMs: o.interval,
    nodeEvery: o.nodeEvery,
    kernelMode: o.kernel as 'process' | 'inproc',
    sandbox: o.sandbox as 'auto' | 'native' | 'off',
    fastPath: o.fastPath === true,
    timeoutS: o.timeout,
    settings: { watchdogMs: o.watchdogMs },
    ...viewHooks(live, recorder, logUpdate, (v) => [renderFrame(header, v), v.phase === 'done']),
  });
} catch (e) {
  logUpdate?.done();
  process.stderr.write(`chaos run failed: ${(e as Error).stack ?? e}\n`);
  await closeAllSwarms();
  process.exit(2);
}
logUpdate?.done();

const summary = renderSummary(result);
process.stdout.write(`\n${summary}\n`);
if (recorder) {
  recorder.print(summary);
  if (o.record) recorder.save(o.record);
  if (o.svg) await castToSvg(recorder.toString(), o.svg);
  process.stderr.write(`recorded${o.record ? ` ${o.record}` : ''}${o.svg ? ` ${o.svg}` : ''}\n`);
}
if (o.json) {
  const { fault_records: _records, ...rest } = result;
  process.stdout.write(
    `${JSON.stringify({ ...rest, faults_detail: _records.map((r) => ({ name: r.name, kind: r.kind, latency_ms: r.latencyMs ?? null, phases_ms: r.phases ?? null, exit: r.exit ?? null })) })}\n`,
  );
}
process.exit(result.ok ? 0 : 1);

/**
 * What a run reports to: the live view (and the recording) gets each frame, else progress lines go to
 * stderr. Both the run on one kernel and the cluster run use it.
 */
function viewHooks<V>(
  live: boolean,
  recorder: CastRecorder | null,
  logUpdate: ((s: string) => void) | null,
  render: (v: V) => [frame: string, last: boolean],
): { onTick?: (v: V) => void; log?: (line: string) => void } {
  return {
    onTick:
      live || recorder
        ? (v) => {
            const [frame, last] = render(v);
            logUpdate?.(frame);
            recorder?.frame(frame, last);
          }
        : undefined,
    log: live ? undefined : (line) => process.stderr.write(`${line}\n`),
  };
}
