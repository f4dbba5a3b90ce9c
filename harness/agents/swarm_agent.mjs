// Swarm agent for the chaos harness, in Node: the same protocol as swarm_agent.py (read its docstring),
// over the compiled TypeScript SDK (`npm run build` produces dist/).
//
// Faults: segv is `process.kill(process.pid, 'SIGSEGV')` (Node has no way to fault on a wild pointer
// without a native addon; the process still dies of a real SIGSEGV with the default disposition),
// exception is an uncaught throw, leak fills Buffers until the cgroup kills us (self-bounded at cap_mb,
// then abort()), hang blocks the event loop in Atomics.wait (no syscalls at all), cpu spins, forkbomb
// starts idle `sleep` children until spawning fails or max_forks is reached, then dies.
import { Buffer } from 'node:buffer';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setImmediate, setTimeout } from 'node:timers';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { CloveClient } = await import(
  pathToFileURL(path.join(root, 'dist', 'sdk', 'typescript', 'client.js')).href
);

const SEND = 0x20;
const RECV = 0x21;
const env = process.env;
const NAME = env.CLOVE_AGENT_NAME;
const PREFIX = env.SWARM_PREFIX ?? 'a-';
const SIZE = Number(env.SWARM_SIZE ?? '1');
const INTERVAL = Number(env.SWARM_INTERVAL_MS ?? '500');
const COLLECTOR = env.SWARM_COLLECTOR ?? 'collector';
const FOCUS = env.SWARM_FOCUS ?? '';
const WORK = Number(env.SWARM_WORK ?? '200');
const EPOCH = randomBytes(6).toString('hex');

const suffix = NAME.startsWith(PREFIX) ? NAME.slice(PREFIX.length) : '';
const me = /^\d+$/.test(suffix) ? Number(suffix) : 0;
const peers = FOCUS
  ? FOCUS === NAME
    ? []
    : [FOCUS]
  : Array.from({ length: SIZE - 1 }, (_, k) => `${PREFIX}${(me + k + 1) % SIZE}`);

const c = await CloveClient.connect({ reconnect: false });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A JSON call that returns error replies instead of throwing (like the Python SDK's non-strict mode). */
async function call(op, payload) {
  try {
    return await c.call(op, payload);
  } catch (e) {
    if (e && typeof e.code === 'string' && e.reply) return e.reply;
    throw e;
  }
}

// Retries on a full mailbox (reports must never be dropped), and on not_found for up to 30 s: in a
// cluster, a node learns of a name claimed on another node through its watch, later under load
// (docs/cluster.md "Limits"); nothing was delivered, so sending again is safe.
async function report(msg) {
  const body = { name: NAME, e: EPOCH, ...msg };
  let unknownSince = 0;
  for (let attempt = 0; attempt < 2000; attempt++) {
    const r = await call(SEND, { to_name: COLLECTOR, message: body });
    if (r.success) return true;
    if (r.code === 'not_found') {
      unknownSince ||= performance.now();
      if (performance.now() - unknownSince > 30_000) {
        console.error('report failed: the collector stayed unknown for 30 s:', r);
        return false;
      }
    } else if (r.code !== 'mailbox_full') {
      console.error('report failed:', r);
      return false;
    }
    await sleep(Math.min(5 * (attempt + 1), 100));
  }
  console.error('report gave up: collector mailbox full');
  return false;
}

function work(m) {
  let h = Buffer.from(`${m.src}:${m.e}:${m.n}`);
  for (let i = 0; i < WORK; i++) h = createHash('sha256').update(h).digest();
  return h[0];
}

async function fault(cmd) {
  switch (cmd.kind) {
    case 'segv':
      process.kill(process.pid, 'SIGSEGV');
      await sleep(60_000);
      return;
    case 'exception':
      setImmediate(() => {
        throw new Error('chaos: injected exception');
      });
      await sleep(60_000);
      return;
    case 'leak': {
      const cap = (cmd.cap_mb ?? 300) * 1024 * 1024;
      const hoard = [];
      let total = 0;
      while (total < cap) {
        hoard.push(Buffer.alloc(8 * 1024 * 1024, 1)); // filled: the pages are really used
        total += 8 * 1024 * 1024;
        await sleep(10);
      }
      console.error(`leak: reached the self-imposed cap of ${cap >> 20} MiB without being stopped; aborting`);
      process.abort();
      return;
    }
    case 'hang':
      for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    case 'cpu':
      for (;;);
    case 'forkbomb': {
      const limit = cmd.max_forks ?? 32;
      let kids = 0;
      let err = null;
      while (kids < limit && !err) {
        const ch = spawn('sleep', ['600'], { stdio: 'ignore' });
        await new Promise((resolve) => {
          ch.once('spawn', resolve);
          ch.once('error', (e) => {
            err = e;
            resolve();
          });
        });
        if (!err) kids++;
      }
      console.error(`forkbomb: ${kids} children, stopped by ${err ? err.message : 'the count limit'}`);
      process.exit(3);
      return;
    }
    default:
      throw new Error(`unknown fault kind ${cmd.kind}`);
  }
}

await report({ t: 'up', pid: process.pid, rt: 'node' });
if (env.SWARM_CRASH_ON_START) await fault({ kind: env.SWARM_CRASH_ON_START }); // a crash loop

let turn = 0;
let n = 0;
let stopped = false;
let slowMs = 0;
let takeMax = 100;
let nextSend = performance.now();
for (;;) {
  const timeoutMs =
    stopped || peers.length === 0 ? 1000 : Math.max(0, Math.round(nextSend - performance.now()));
  const reply = await call(RECV, { max: takeMax, wait: true, timeout_ms: timeoutMs, lease: true });
  if (!reply.success) await report({ t: 'error', op: 'recv', code: reply.code, error: reply.error });
  const got = [];
  const cmds = [];
  for (const m of reply.messages ?? []) {
    const body = m.message;
    if (body && typeof body === 'object' && body.t === 'd') {
      work(body);
      got.push([body.src, body.e, body.n]);
    } else if (body && typeof body === 'object' && 'cmd' in body) cmds.push(body);
  }
  if (slowMs) await sleep(slowMs);

  const sent = [];
  const errors = [];
  if (!stopped && peers.length && performance.now() >= nextSend) {
    const peer = peers[turn % peers.length];
    const r = await call(SEND, { to_name: peer, message: { t: 'd', src: NAME, e: EPOCH, n: n + 1 } });
    if (r.success) {
      n++;
      turn++;
      sent.push([peer, n]);
    } else errors.push({ op: 'send', dst: peer, code: r.code, error: r.error });
    nextSend += INTERVAL;
    if (nextSend < performance.now()) nextSend = performance.now() + INTERVAL;
  }

  let theFault = null;
  let justStopped = false;
  for (const cmd of cmds) {
    if (cmd.cmd === 'stop' && !stopped) stopped = justStopped = true;
    else if (cmd.cmd === 'slow') {
      slowMs = cmd.ms ?? 200;
      takeMax = cmd.max ?? 1;
    } else if (cmd.cmd === 'fault' && !theFault) theFault = cmd;
  }
  if (got.length || sent.length) await report({ t: 'tick', got, sent });
  for (const e of errors) await report({ t: 'error', ...e });
  if (justStopped) await report({ t: 'stopped', n });
  if (theFault) {
    // Acknowledge the lease first (RECV max 0), or the restarted agent would get the fault again.
    await call(RECV, { max: 0, lease: true });
    await report({ t: 'fault', kind: theFault.kind, fid: theFault.fid, ts: Date.now() });
    await fault(theFault);
  }
}
