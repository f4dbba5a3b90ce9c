/**
 * Event-loop probe of a kernel, run as its own process (`node dist/bench/lib/probe.js <kernel socket>`):
 * a NOOP round trip every INTERVAL ms on its own connection; a slow reply means the kernel's event loop
 * was busy (e.g. a synchronous spawn), or that the machine ran something else. It reads commands on stdin:
 * `phase <name>` starts a new phase, `dump` prints {phase: [rtt ms…]} as one JSON line and exits. Being a
 * separate process, the bench's own work (spawning bare interpreters) never shows up in its numbers.
 *
 * `node dist/bench/lib/probe.js --echo-server <socket>`: the control: an idle Node process that sends every
 * byte it reads back (a NOOP frame comes back as the reply the SDK expects), with no kernel behind it.
 * Probed in the same phases, its slow replies are what the machine's load alone does to an idle Node
 * process's wake-ups; the kernel's beyond those are its own.
 */
import fs from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';
import { CloveClient } from '../../sdk/typescript/client.js';

if (process.argv[2] === '--echo-server') {
  const at = process.argv[3];
  fs.rmSync(at, { force: true });
  const server = net.createServer((s) => {
    s.on('data', (chunk) => s.write(chunk));
    s.on('error', () => s.destroy());
  });
  server.listen(at, () => process.stdout.write('ready 0\n'));
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
  await new Promise(() => {}); // serves until SIGTERM
}

const INTERVAL_MS = 2;
const [sockPath] = process.argv.slice(2);
const phases: Record<string, number[]> = {};
let phase = 'start';
let running = true;

const c = await CloveClient.connect({ socketPath: sockPath, reconnect: false });
process.stdout.write('ready 0\n');
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  const [cmd, arg] = l.trim().split(/\s+/);
  if (cmd === 'phase') phase = arg ?? 'unnamed';
  else if (cmd === 'dump') running = false;
});
const payload = Buffer.from('probe');
while (running) {
  const t = process.hrtime.bigint();
  await c.echo(payload);
  (phases[phase] ??= []).push(Number(process.hrtime.bigint() - t) / 1e6);
  await new Promise((r) => setTimeout(r, INTERVAL_MS));
}
c.close();
// stdout is a pipe (asynchronous): exit only once the line is flushed.
process.stdout.write(JSON.stringify(phases) + '\n', () => process.exit(0));
