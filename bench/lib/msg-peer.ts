/**
 * One peer of the messaging comparison (bench/messaging.ts), run as its own process so that brokers and
 * clients compete for the same cores:
 *
 *   node dist/bench/lib/msg-peer.js <system> <role> <pair> <address>
 *
 * system: clove | relay | redis | nats; role: producer | consumer | relay-server (the Node relay);
 * pair: the pair index (producer i talks to consumer i); address: the kernel socket, relay socket,
 * Redis socket or NATS URL. Clove peers are agents spawned by the kernel (SPAWN; sandboxed as `clove up`
 * does by default), so they read all of this from $MSG_* environment variables instead, and take their
 * orders from the bench through the kernel (a message from the agent named `bench`).
 *
 * Every message body is `size` bytes; its first byte says what it is: `d` data, `p` ping (echoed back),
 * `a` acknowledgement (a consumer sends one after every ACK_EVERY data messages). A producer keeps at
 * most WINDOW data messages unacknowledged: throughput is measured with a bounded window.
 *
 * Orders (one JSON line on stdin, or a Clove message): `{size, ms, warmup, pings}` → the producer sends
 * data for `ms` ms (in whole acknowledgement batches) then waits until all are acknowledged, then does
 * `warmup` round trips it does not time and `pings` it does, one at a time; it answers `{delivered,
 * seconds, rtt_us: [...]}`.
 */
import net from 'node:net';
import fs from 'node:fs';
import readline from 'node:readline';
import { decodePushBinary, encodeFrame, encodeFrameParts, FrameDecoder, Op } from '../../protocol/index.js';
import { CloveClient, EncodedMessage, type PushedMessage } from '../../sdk/typescript/client.js';

import { ACK_EVERY, WINDOW, type Order, type Outcome } from './msg-peer-protocol.js';

/** The opcode the relay clients put on their frames (any opcode: the relay does not look at it). */
const RELAY_OP = 0x20;

/**
 * A body as a system's client hands it over: bytes (relay, Redis, NATS; a pushed Clove message's bytes,
 * which are its JSON text, a string in quotes), or the string a Clove message parsed to (RECV). The peers
 * only look at the first character, as the others at the first byte: no body is parsed.
 */
type Body = Buffer | string;
const QUOTE = 0x22;
const kindOf = (b: Body): number => (typeof b === 'string' ? b.charCodeAt(0) : b[0] === QUOTE ? b[1] : b[0]);

/** What a producer needs from a system: send one body to its consumer, and hear what comes back. */
interface Link {
  send(body: Buffer): void;
  /** Called with each body the consumer sends back (acks and pongs). */
  onReply: (body: Body) => void;
  /** Flushes what send() buffered, where the client buffers (NATS, Redis pipelines). */
  flush?(): void;
}

const env = process.env;
// A stopped agent (SIGTERM, then the kill's grace period) leaves through Node's exit path, so that a peer
// run under `node --cpu-prof` (messaging.ts --agents-cpu-prof) writes its profile.
process.on('SIGTERM', () => process.exit(0));
// A Clove agent gets the kernel's socket as its only argument (SPAWN's default) and the rest in $MSG_*.
const argv = env.MSG_SYSTEM
  ? [env.MSG_SYSTEM, env.MSG_ROLE, env.MSG_PAIR, env.CLOVE_SOCKET ?? process.argv[2]]
  : process.argv.slice(2);
const [system, role] = argv;
const pair = Number(argv[2] ?? 0);
const address = argv[3] ?? '';

/**
 * `make` remembering its last argument and result: a peer sends the same body over and over (as the
 * Redis and NATS peers publish one Buffer), so each encoding of it is made once, not per message.
 */
function lastOf<K, V>(make: (k: K) => V): (k: K) => V {
  let last: { k: K; v: V } | undefined;
  return (k) => {
    if (last === undefined || last.k !== k) last = { k, v: make(k) };
    return last.v;
  };
}

function body(kind: 'd' | 'p', size: number): Buffer {
  const b = Buffer.alloc(size, 'x');
  b[0] = kind.charCodeAt(0);
  return b;
}

/**
 * The producer's measuring loop, the same for every system: a bounded window of data messages, then one
 * ping at a time. Why shared: the systems must be measured doing exactly the same job.
 */
async function produce(link: Link, o: Order): Promise<Outcome> {
  let acked = 0;
  let pong: (() => void) | null = null;
  let wake: (() => void) | null = null;
  link.onReply = (b) => {
    const kind = kindOf(b);
    if (kind === 0x61 /* a */) {
      acked += ACK_EVERY;
      wake?.();
    } else if (kind === 0x70 /* p */) pong?.();
  };
  const data = body('d', o.size);
  let sent = 0;
  const t0 = process.hrtime.bigint();
  const deadline = Date.now() + o.ms;
  let tEnd = t0;
  for (;;) {
    const stop = Date.now() >= deadline;
    if (!stop) {
      while (sent - acked + ACK_EVERY <= WINDOW) {
        for (let i = 0; i < ACK_EVERY; i++) link.send(data);
        sent += ACK_EVERY;
      }
      link.flush?.();
    }
    if (stop && acked >= sent) break;
    await new Promise<void>((r) => (wake = r));
    wake = null;
    tEnd = process.hrtime.bigint();
  }
  const seconds = Number(tEnd - t0) / 1e9;
  const ping = body('p', o.size);
  const roundTrip = (): Promise<void> => {
    const got = new Promise<void>((r) => (pong = r));
    link.send(ping);
    link.flush?.();
    return got;
  };
  for (let i = 0; i < (o.warmup ?? 0); i++) await roundTrip();
  const rtt: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < o.pings; i++) {
    const s = process.hrtime.bigint();
    await roundTrip();
    rtt.push(Number(process.hrtime.bigint() - s) / 1000);
  }
  const cpu = process.cpuUsage(cpu0);
  pong = null;
  return { delivered: sent, seconds, rtt_us: rtt, rtt_cpu_us: cpu.user + cpu.system };
}

/** The consumer's side, the same for every system: echo pings, acknowledge every ACK_EVERY data. */
function consumer<B extends Body>(reply: (b: B | Buffer) => void, flush?: () => void): (b: B) => void {
  let count = 0;
  const ack = Buffer.from('a');
  return (b) => {
    if (kindOf(b) === 0x70 /* p */) {
      reply(b);
      flush?.();
    } else if (++count % ACK_EVERY === 0) {
      reply(ack);
      flush?.();
    }
  };
}

/** Orders from the bench on stdin, answers on stdout (every system but Clove). */
function serveStdin(link: Link): void {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (l) => {
    void produce(link, JSON.parse(l) as Order).then((out) =>
      process.stdout.write(JSON.stringify(out) + '\n'),
    );
  });
  rl.on('close', () => process.exit(0));
}

// --- Clove -----------------------------------------------------------------------------------------

/**
 * Clove peers: agents on the TypeScript SDK. Bodies travel as JSON strings of `size` bytes (`"d…"`).
 *
 * MSG_MODE `send` (default): sent by name with one SEND each, taken with a blocking RECV `max` 1000 in
 * batches; SENDs are pipelined ahead of the blocking RECV on the one connection (replies come back in order).
 * MSG_MODE `batch`: what a client built for rate does: the bodies queued in one turn leave in one
 * SEND_BATCH (answered only for refused items, `results: "refused"`; with MSG_QUIET not answered at all,
 * `results: "none"`, a refusal would come as a SEND_REFUSED), and messages arrive pushed (HELLO push; the
 * consumer takes them with `client.messageBatches()`, the producer with `client.messages()`), no RECV at all.
 * MSG_MODE `raw`: `batch` without the SDK (cloveRawPeer), a diagnostic.
 */
async function clovePeer(): Promise<void> {
  const c = await CloveClient.connect({ socketPath: address, reconnect: false });
  await c.hello();
  const peerName = `msg-${role === 'producer' ? 'c' : 'p'}${pair}`;
  // A producer sends the same body over and over (as the other systems' peers send the same Buffer): its
  // string is made once. Two characters less: the JSON string's quotes make the payload `size` bytes.
  const asString = lastOf((b: Buffer): string => b.toString('latin1', 0, b.length - 2));
  const asBody = (m: unknown): string => (typeof m === 'string' ? m : '');
  // A JSON string's bytes (a pushed message's) without their quotes.
  const toString = (b: Body): string =>
    typeof b === 'string' ? b : b[0] === QUOTE ? b.toString('latin1', 1, b.length - 1) : b.toString('latin1');
  if (env.MSG_MODE === 'batch') return clovePushPeer(c, peerName, asString, asBody, toString);
  // The SDK's connection said HELLO (LIST `ready`) and stays open, idle; the raw peer has its own.
  if (env.MSG_MODE === 'raw') return cloveRawPeer(peerName, asString, toString);
  if (role === 'consumer') {
    const pending: string[] = [];
    const onBody = consumer<string>((b) => pending.push(toString(b)));
    for (;;) {
      const r = await c.recv({ max: 1000, timeoutMs: 300_000 });
      for (const m of r.messages) onBody(asBody(m.message));
      // Not awaited: pipelined ahead of the next blocking RECV.
      for (const s of pending.splice(0)) void c.send(peerName, s);
    }
  }
  // producer: orders come from the agent named `bench`.
  const out: string[] = [];
  const link: Link = {
    send: (b) => out.push(asString(b)),
    onReply: () => {},
  };
  for (;;) {
    const r = await c.recv({ max: 1, timeoutMs: 300_000 });
    const order = r.messages[0]?.message as Order | undefined;
    if (!order || typeof order !== 'object') continue;
    const running = produce(link, order);
    let done = false;
    void running.then(() => (done = true));
    // The producer's I/O loop: write what produce() queued (SENDs), then a blocking RECV for replies.
    while (!done) {
      const sends = out.splice(0).map((s) => c.send(peerName, s));
      const got = await c.recv({ max: 1000, timeoutMs: 30_000 });
      for (const s of await Promise.all(sends))
        if (!s.success) throw new Error(`SEND to ${peerName} failed: ${JSON.stringify(s)}`);
      for (const m of got.messages) link.onReply(asBody(m.message));
      if (got.count === 0) throw new Error(`no reply from ${peerName} within 30 s`);
      // produce() reacts to the replies in microtasks; by the next turn it has queued what follows, or ended.
      await new Promise((res) => setImmediate(res));
    }
    await c.send('bench', await running);
  }
}

/**
 * Takes the next SEND_BATCH's worth off the front of `queue`: split so that no frame passes about 100 KiB
 * (V8 makes strings and buffers over 128 KiB outside its young generation, several times slower per byte:
 * reports/fastpath.md), and at most 4096 items (SEND_BATCH's bound).
 */
function nextBatch<T>(queue: T[], bytesOf: (item: T) => number): T[] {
  let n = 0;
  for (let bytes = 0; n < queue.length && n < 4096 && bytes < 96 * 1024; n++) bytes += bytesOf(queue[n]) + 64;
  return queue.splice(0, n);
}

/** MSG_MODE `batch`: SEND_BATCH out, pushed messages in (see clovePeer). */
async function clovePushPeer(
  c: CloveClient,
  peerName: string,
  asString: (b: Buffer) => string,
  asBody: (m: unknown) => string,
  toString: (b: Body) => string,
): Promise<void> {
  // Each body is encoded once (EncodedMessage, lastOf): a producer sends the same body each time, a consumer
  // the same acknowledgement.
  const out: EncodedMessage[] = [];
  const encoded = lastOf((text: string) => new EncodedMessage(text));
  // One SEND_BATCH per flush, split by nextBatch. Only refusals come back: in the reply (`results:
  // "refused"`, not one result per message), or with MSG_QUIET as a SEND_REFUSED (`"none"`, no reply).
  c.onRefused((r) => {
    console.error(`SEND_BATCH to ${peerName} refused: ${JSON.stringify(r)}`);
    process.exit(1);
  });
  const flush = (): void => {
    while (out.length > 0) {
      const items = nextBatch(out, (m) => m.byteLength).map((message) => ({ to_name: peerName, message }));
      if (env.MSG_QUIET) void c.sendBatch(items, { results: 'none' });
      else
        void c.sendBatch(items, { results: 'refused' }).then((r) => {
          if (r.failed_count > 0)
            throw new Error(`SEND_BATCH to ${peerName}: ${JSON.stringify(r.results[0])}`);
        });
    }
  };
  // A consumer sends each ack and pong at once (one item); a producer's bodies leave per window batch.
  const onBody =
    role === 'consumer'
      ? consumer<Body>((b) => out.push(encoded(toString(b))), flush)
      : (b: Body): void => link.onReply(b);
  const link: Link = { send: (b) => out.push(encoded(asString(b))), onReply: () => {}, flush };
  // The bytes of a message pushed in the binary envelope (the SDK asks for it): nothing is parsed, as a
  // NATS consumer takes a message's data. A kernel pushing JSON: the parsed string.
  const bodyOf = (m: PushedMessage): Body => m.bytes ?? asBody(m.message);
  if (role === 'consumer') {
    // A consumer built for rate takes what arrived as one batch (one promise per PUSH, not per message).
    for await (const batch of c.messageBatches()) for (const m of batch) onBody(bodyOf(m));
    return;
  }
  // The producer takes its acknowledgements one by one and refills the window after each (a SEND_BATCH of
  // ACK_EVERY): taken as batches, several refill it at once in one larger SEND_BATCH, which measured at
  // about half the rate on this machine.
  for await (const m of c.messages()) {
    if (m.from_name === 'bench') {
      void produce(link, m.message as Order).then((res) => c.send('bench', res));
      continue;
    }
    onBody(bodyOf(m));
  }
}

/**
 * MSG_MODE `raw` (a diagnostic, `--systems clove-fast-raw`): the job of `batch` without the SDK, to tell
 * the SDK's share of a round trip from the kernel's: its own connection (HELLO push, batched, binary),
 * SEND_BATCH frames written as bytes, PUSH_BINARY decoded (protocol/push-binary.ts), replies only checked
 * for a refusal.
 */
async function cloveRawPeer(
  peerName: string,
  asString: (b: Buffer) => string,
  toString: (b: Body) => string,
): Promise<void> {
  const s = await new Promise<net.Socket>((res, rej) => {
    const x = net.connect(address, () => res(x));
    x.once('error', rej);
  });
  s.write(encodeFrame(0, Op.HELLO, '{"push":{"messages":true,"batch":true,"format":"binary"}}'));
  const dec = new FrameDecoder(16 * 1024 * 1024);
  // Each body's JSON bytes are made once (lastOf), as the SDK peer's EncodedMessage.
  const queued: Buffer[] = [];
  const bytesOf = lastOf((text: string) => Buffer.from(`"${text}"`, 'latin1'));
  const queue = (text: string): void => void queued.push(bytesOf(text));
  const opening = Buffer.from(`{"messages":[{"to_name":"${peerName}","message":`);
  const between = Buffer.from(`},{"to_name":"${peerName}","message":`);
  const tail = Buffer.from(`}],"results":"${env.MSG_QUIET ? 'none' : 'refused'}"}`);
  // Split as the SDK peer splits (nextBatch); the frame is its parts copied once (encodeFrameParts).
  const flush = (): void => {
    while (queued.length > 0) {
      const items = nextBatch(queued, (m) => m.length);
      const parts: Buffer[] = [opening];
      for (let i = 0; i < items.length; i++) {
        if (i > 0) parts.push(between);
        parts.push(items[i]);
      }
      parts.push(tail);
      s.write(encodeFrameParts(0, Op.SEND_BATCH, parts));
    }
  };
  s.on('close', () => {
    console.error(`raw peer ${role} ${pair}: the kernel closed the connection`);
    process.exit(1);
  });
  const link: Link = { send: (b) => queue(asString(b)), onReply: () => {}, flush };
  const onBody =
    role === 'consumer' ? consumer<Body>((b) => queue(toString(b)), flush) : (b: Body) => link.onReply(b);
  s.on('data', (chunk: Buffer) => {
    const { frames, error } = dec.push(chunk);
    if (error) throw error;
    for (const f of frames) {
      if (f.opcode !== Op.PUSH_BINARY) {
        // A refusal: a SEND_REFUSED (MSG_QUIET), or a reply that failed or lists refused items.
        const p = f.payload;
        if (
          f.opcode === Op.SEND_REFUSED ||
          p.includes('"success":false') ||
          (p.includes('"failed_count":') && !p.includes('"failed_count":0,'))
        )
          throw new Error(`raw peer ${role} ${pair}: refused: ${p.toString()}`);
        continue;
      }
      for (const m of decodePushBinary(f.payload)) {
        if (m.from_name === 'bench')
          void produce(link, m.message as Order).then((res) =>
            s.write(encodeFrame(0, Op.SEND, { to_name: 'bench', message: res })),
          );
        else onBody(m.bytes);
      }
    }
  });
}

// --- raw relay (the floor) -------------------------------------------------------------------------

/**
 * The raw relay: listens on a Unix socket; each client's first frame names it (`P<i>` or `C<i>`); after
 * that, the complete frames of every read go to the paired connection in one write. No parsing beyond the
 * 17-byte header: the floor a broker in Node can reach on this machine.
 */
function relayServer(): void {
  fs.rmSync(address, { force: true });
  const peers = new Map<string, net.Socket>();
  const server = net.createServer((s) => {
    const dec = new FrameDecoder(16 * 1024 * 1024);
    let me = '';
    s.on('data', (chunk: Buffer) => {
      const { frames, error } = dec.push(chunk);
      if (error) return s.destroy();
      let i = 0;
      if (!me && frames.length > 0) {
        me = frames[0].payload.toString();
        peers.set(me, s);
        i = 1;
      }
      if (i >= frames.length) return;
      const other = peers.get((me[0] === 'P' ? 'C' : 'P') + me.slice(1));
      if (!other) return;
      const bufs = [];
      for (; i < frames.length; i++) bufs.push(encodeFrame(0, frames[i].opcode, frames[i].payload));
      other.write(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
    });
    s.on('error', () => s.destroy());
  });
  server.listen(address, () => process.stdout.write('ready 0\n'));
}

async function relayPeer(): Promise<void> {
  const s = await new Promise<net.Socket>((res, rej) => {
    const x = net.connect(address, () => res(x));
    x.once('error', rej);
  });
  s.setNoDelay(true);
  s.write(encodeFrame(0, RELAY_OP, Buffer.from(`${role === 'producer' ? 'P' : 'C'}${pair}`)));
  const dec = new FrameDecoder(16 * 1024 * 1024);
  let queued: Buffer[] = [];
  const flush = (): void => {
    if (queued.length === 0) return;
    s.write(queued.length === 1 ? queued[0] : Buffer.concat(queued));
    queued = [];
  };
  const link: Link = {
    send: (b) => queued.push(encodeFrame(0, RELAY_OP, b)),
    onReply: () => {},
    flush,
  };
  const onBody =
    role === 'consumer'
      ? consumer<Buffer>(
          (b) => queued.push(encodeFrame(0, RELAY_OP, b)),
          () => {},
        )
      : (b: Buffer) => link.onReply(b);
  s.on('data', (chunk: Buffer) => {
    const { frames, error } = dec.push(chunk);
    if (error) throw error;
    for (const f of frames) onBody(f.payload);
    if (role === 'consumer') flush();
  });
  process.stdout.write('ready 0\n');
  if (role === 'producer') serveStdin(link);
}

// --- Redis pub/sub and NATS --------------------------------------------------------------------------

interface RedisClient {
  connect(): Promise<unknown>;
  duplicate(): RedisClient;
  publish(channel: string, message: Buffer): Promise<number>;
  subscribe(channel: string, listener: (m: Buffer) => void, bufferMode: true): Promise<void>;
}

/** Redis pub/sub: data on channel `m<i>`, acks and pongs back on `r<i>`; a publisher and a subscriber connection each. */
async function redisPeer(): Promise<void> {
  const { createClient } = (await import('redis')) as unknown as { createClient(o: unknown): RedisClient };
  const pub = createClient({ socket: { path: address } });
  const sub = pub.duplicate();
  await pub.connect();
  await sub.connect();
  const fail = (e: unknown): void => {
    console.error(e);
    process.exit(1);
  };
  if (role === 'consumer') {
    const onBody = consumer<Buffer>((b: Buffer) => void pub.publish(`r${pair}`, b).catch(fail));
    await sub.subscribe(`m${pair}`, onBody, true);
    process.stdout.write('ready 0\n');
    return;
  }
  const link: Link = { send: (b) => void pub.publish(`m${pair}`, b).catch(fail), onReply: () => {} };
  await sub.subscribe(`r${pair}`, (m) => link.onReply(m), true);
  process.stdout.write('ready 0\n');
  serveStdin(link);
}

interface NatsConnection {
  publish(subject: string, data: Uint8Array): void;
  subscribe(subject: string, o: { callback(err: unknown, m: { data: Uint8Array }): void }): unknown;
  flush(): Promise<void>;
}

/** Core NATS (no JetStream): data on subject `m.<i>`, acks and pongs back on `r.<i>`, one connection. */
async function natsPeer(): Promise<void> {
  const { connect } = (await import('nats')) as unknown as { connect(o: unknown): Promise<NatsConnection> };
  const nc = await connect({ servers: address });
  const buf = (d: Uint8Array): Buffer => Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  if (role === 'consumer') {
    const onBody = consumer<Buffer>((b: Buffer) => nc.publish(`r.${pair}`, b));
    nc.subscribe(`m.${pair}`, { callback: (_e, m) => onBody(buf(m.data)) });
    await nc.flush();
    process.stdout.write('ready 0\n');
    return;
  }
  const link: Link = { send: (b) => nc.publish(`m.${pair}`, b), onReply: () => {} };
  nc.subscribe(`r.${pair}`, { callback: (_e, m) => link.onReply(buf(m.data)) });
  await nc.flush();
  process.stdout.write('ready 0\n');
  serveStdin(link);
}

process.on('SIGTERM', () => process.exit(0));
const main: Record<string, () => unknown> = {
  clove: clovePeer,
  relay: () => (role === 'relay-server' ? relayServer() : relayPeer()),
  redis: redisPeer,
  nats: natsPeer,
};
const run = main[system ?? ''];
if (!run) {
  console.error('usage: msg-peer.js clove|relay|redis|nats producer|consumer|relay-server <pair> <address>');
  process.exit(2);
} else
  Promise.resolve(run()).catch((e) => {
    console.error(`msg-peer ${system} ${role} ${pair}:`, e);
    process.exit(1);
  });
