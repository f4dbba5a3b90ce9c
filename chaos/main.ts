/**
 * `npm run chaos -- --agents 100 --kill 20`: the sales proof, live. Starts a kernel, a swarm of Python
 * and Node agents exchanging numbered messages, kills (or otherwise faults) seeded-random victims, and
 * verifies: survivors undisturbed, victims restarted and serving, no message lost. Exit code 0 only
 * if every invariant holds; `--json` prints one JSON object as the last line.
 */
import { Command, InvalidArgumentError } from 'commander';
import { createLogUpdate } from 'log-update';
import { FAULT_KINDS, isFaultKind, type FaultKind } from '../harness/faults.js';
import { closeAllSwarms } from '../harness/swarm.js';
import { CastRecorder, castToSvg } from './cast.js';
import { runChaos, type ChaosResult } from './run.js';
import { renderFrame, renderSummary, type ViewHeader } from './view.js';

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
  .option('--no-live', 'no live view (progress lines on stderr instead)');

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
}>();

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

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    logUpdate?.done();
    process.stderr.write(`\n${sig}: stopping the kernel and every agent…\n`);
    void closeAllSwarms().finally(() => process.exit(130));
  });
}

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
    onTick:
      live || recorder
        ? (v) => {
            const frame = renderFrame(header, v);
            logUpdate?.(frame);
            recorder?.frame(frame, v.phase === 'done');
          }
        : undefined,
    log: live ? undefined : (line) => process.stderr.write(`${line}\n`),
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
