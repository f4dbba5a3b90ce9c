/**
 * The TypeScript client of the Clove kernel: typed, promise-based, pipelined (many calls in flight on
 * one connection; replies come back in order), with reconnection. The transport is injected so tests
 * can swap it.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import {
  decodePushBinary,
  DEFAULT_SOCKET,
  encodeFrame,
  encodeFrameParts,
  FrameDecoder,
  Op,
  SOCKET_ENV,
  type OpName,
  type Replies,
  type Requests,
} from '../../protocol/index.js';
import {
  CloveError,
  ConnectionClosedError,
  NotFoundError,
  ProtocolError,
  TimeoutError,
  kernelError,
} from './errors.js';
import type * as T from './types.js';

export * from './errors.js';
export type * from './types.js';

export type Transport = () => Promise<Duplex>;

/** A Unix-socket transport to `path`. */
export function unixTransport(path: string): Transport {
  return () =>
    new Promise((resolve, reject) => {
      const s = net.connect(path);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
}

/** Connect errors that mean no kernel listens on the socket (yet): waited out by `waitForKernel`. */
const NO_KERNEL = new Set(['ECONNREFUSED', 'ENOENT']);

/** A kernel started this process (it set CLOVE_AGENT_ID) and the client uses the socket it gave. */
function startedByKernel(options: ClientOptions): boolean {
  const given = process.env[SOCKET_ENV];
  return (
    !!process.env.CLOVE_AGENT_ID &&
    !!given &&
    options.transport === undefined &&
    (options.socketPath ?? given) === given
  );
}

/** CLOVE_RECONNECT_WINDOW_MS, else 30 s (ClientOptions.reconnectWindowMs). */
function windowFromEnv(): number {
  const v = Number(process.env.CLOVE_RECONNECT_WINDOW_MS);
  return process.env.CLOVE_RECONNECT_WINDOW_MS !== undefined && Number.isFinite(v) && v >= 0 ? v : 30_000;
}

export interface ClientOptions {
  /** Defaults to $CLOVE_SOCKET, else /tmp/clove.sock. */
  socketPath?: string;
  transport?: Transport;
  /** Reconnect on the next call after the connection dropped (default true), with this many attempts. */
  reconnect?: boolean;
  reconnectAttempts?: number;
  reconnectDelayMs?: number;
  /**
   * How long a dropped connection (the kernel restarting: docs/restart.md) is retried before calls fail
   * (default $CLOVE_RECONNECT_WINDOW_MS, else 30000; 0: calls in flight fail at once, as before). Within
   * it, requests written but not answered and calls made meanwhile are kept and sent again, in order, on
   * the new connection: callers just get their answer later. At least once: a request the old kernel
   * executed but did not answer is executed again.
   */
  reconnectWindowMs?: number;
  /**
   * A first connect that finds no kernel listening (ECONNREFUSED, ENOENT: the kernel that started this
   * agent is restarting) is retried for the reconnect window instead of failing. Default: true when a
   * kernel started this process (CLOVE_AGENT_ID set) and the socket is the one it gave (CLOVE_SOCKET).
   */
  waitForKernel?: boolean;
  /** Per-call timeout in ms (0: none; the default). A timed-out connection is closed: replies are ordered. */
  timeoutMs?: number;
  maxPayload?: number;
}

/** Pushed items held for an iterator; past this many the connection stops being read until it takes some. */
const PUSH_BUFFER = 4096;
/** SEND_REFUSED frames kept while no onRefused handler is registered; older ones are dropped. */
const REFUSALS_KEPT = 1024;

/**
 * One kind of pushed item (messages or events): what arrived, in the chunks it arrived in (one PUSH frame
 * each), and the iterators waiting for it. Why chunks: a reader of batches (`messageBatches()`) takes a
 * frame's items as one array, with no per-item queue operation or promise.
 */
class PushQueue<T> {
  private chunks: T[][] = [];
  /** Items of chunks[0] already taken. */
  private head = 0;
  /** Items held (every chunk, less what was taken of the first). */
  held = 0;
  private waiting: ((v: T[] | null) => void)[] = [];
  ended = false;

  put(chunk: T[]): void {
    if (chunk.length === 0) return;
    const w = this.waiting.shift();
    if (w) return w(chunk);
    this.chunks.push(chunk);
    this.held += chunk.length;
  }

  /** Items not consumed after all (an iterator left mid-batch): first in line again. */
  unshift(items: T[]): void {
    if (items.length === 0) return;
    if (this.head > 0) {
      this.chunks[0] = this.chunks[0].slice(this.head);
      this.head = 0;
    }
    this.chunks.unshift(items);
    this.held += items.length;
  }

  /** Everything held, in order, as one array; waits while nothing is; null once ended and empty. */
  take(): Promise<T[] | null> {
    if (this.held > 0) {
      let out = this.head > 0 ? this.chunks[0].slice(this.head) : this.chunks[0];
      if (this.chunks.length > 1) out = out.concat(...this.chunks.slice(1));
      this.chunks = [];
      this.head = 0;
      this.held = 0;
      return Promise.resolve(out);
    }
    if (this.ended) return Promise.resolve(null);
    return new Promise((r) => this.waiting.push(r));
  }

  end(): void {
    this.ended = true;
    for (const w of this.waiting.splice(0)) w(null);
  }
}

/** What a push iterator of `kind` yields. */
type Pushed<K extends 'message' | 'event'> = K extends 'message' ? T.PushedMessage : T.PushedEvent;

interface Pending {
  op: number;
  /** The request as written: written again after a reconnect. */
  frame?: Buffer;
  resolve: (v: Buffer) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

/** The bytes of an EncodedMessage (module-private: set in its static block). */
let encodedBytes: (m: EncodedMessage) => Buffer;

/**
 * A message encoded once, to be sent many times without being encoded again (`send`, `sendBatch`), as a
 * NATS or Redis client publishes one buffer over and over. It holds `JSON.stringify(value)`: one JSON value
 * by construction, so what goes on the wire is byte for byte what the plain value would have given, and
 * the receiver gets the value. Immutable: its bytes are not exposed.
 */
export class EncodedMessage {
  readonly #json: Buffer;
  static {
    encodedBytes = (m) => m.#json;
  }
  constructor(value: unknown) {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`a message must be a JSON value, not ${typeof value}`);
    this.#json = Buffer.from(text, 'utf8');
  }
  /** The size of its JSON text, in bytes. */
  get byteLength(): number {
    return this.#json.length;
  }
}

/** The JSON of a SEND / SEND_BATCH item's target, without the closing brace: `{"to":1,"to_name":"a"`. */
function targetHead(to: number | undefined, name: string | undefined): string {
  const fields: string[] = [];
  if (to !== undefined) fields.push(`"to":${JSON.stringify(to)}`);
  if (name !== undefined) fields.push(`"to_name":${JSON.stringify(name)}`);
  return `{${fields.join(',')}`;
}

/** A reply's JSON; a `success: false` reply is thrown as the KernelError of its code. */
function parseReply<R>(op: number, buf: Buffer): R {
  let reply: unknown;
  try {
    reply = JSON.parse(buf.toString('utf8'));
  } catch {
    throw new ProtocolError(`reply to opcode 0x${op.toString(16)} is not JSON`);
  }
  if (
    reply &&
    typeof reply === 'object' &&
    !Array.isArray(reply) &&
    (reply as { success?: unknown }).success === false
  ) {
    throw kernelError(reply as Record<string, unknown>);
  }
  return reply as R;
}

const CLOSE_BRACE = Buffer.from('}');

export class CloveClient {
  private sock: Duplex | null = null;
  private connecting: Promise<Duplex> | null = null;
  private pending: Pending[] = [];
  private closed = false;
  /** After a first successful connect, a dropped connection is re-opened with retries. */
  private everConnected = false;
  private readonly transport: Transport;
  private readonly opts: Required<Omit<ClientOptions, 'socketPath' | 'transport'>>;
  /** The id the kernel gives this connection (learned from every reply header). */
  agentId = 0;
  /** What this client asked to have pushed (HELLO `push`); asked again on a reconnect. */
  private pushMode: { messages: boolean; events: boolean; batch: boolean; format?: 'binary' } = {
    messages: false,
    events: false,
    batch: false,
  };
  private pushed = { message: new PushQueue<T.PushedMessage>(), event: new PushQueue<T.PushedEvent>() };
  /** The socket corked for the current tick (see `write`), if any. */
  private corked: Duplex | null = null;
  /** Keys of the journaled steps open on the current connection, innermost last (docs/durable.md). */
  private steps: string[] = [];
  /** When the current outage began (the connection dropped, calls kept for the window); 0: none. */
  private outageSince = 0;
  /** HELLO was said: said again on a new connection (the kernel counts the agent ready from it). */
  private helloSaid = false;
  /** Topics subscribed and names registered on this client: made again on a new connection. */
  private readonly topics = new Set<string>();
  private readonly names = new Set<string>();
  private readonly reconnectHooks: (() => void)[] = [];
  private readonly refusedHooks: ((refusal: T.SendRefused) => void)[] = [];
  /** SEND_REFUSED frames that came while no handler was registered (see onRefused). */
  private readonly refusedKept: T.SendRefused[] = [];
  private refusedDropWarned = false;
  /** The last `ref` given to a SEND_BATCH with `results: "none"` (numbered from 1 per client). */
  private batchRefs = 0;

  constructor(options: ClientOptions = {}) {
    this.transport =
      options.transport ?? unixTransport(options.socketPath ?? process.env[SOCKET_ENV] ?? DEFAULT_SOCKET);
    this.opts = {
      reconnect: options.reconnect ?? true,
      reconnectAttempts: options.reconnectAttempts ?? 20,
      reconnectDelayMs: options.reconnectDelayMs ?? 50,
      reconnectWindowMs: options.reconnectWindowMs ?? windowFromEnv(),
      waitForKernel: options.waitForKernel ?? startedByKernel(options),
      timeoutMs: options.timeoutMs ?? 0,
      maxPayload: options.maxPayload ?? 256 * 1024 * 1024,
    };
  }

  static async connect(options: ClientOptions = {}): Promise<CloveClient> {
    const c = new CloveClient(options);
    await c.ensure();
    return c;
  }

  private ensure(): Promise<Duplex> {
    if (this.closed) return Promise.reject(new ConnectionClosedError('client is closed'));
    if (this.sock) return Promise.resolve(this.sock);
    if (!this.connecting) {
      this.connecting = this.open().finally(() => {
        this.connecting = null;
      });
    }
    return this.connecting;
  }

  private async open(): Promise<Duplex> {
    let last: Error | null = null;
    // In an outage: until the window ends (the kernel restarts). A first connect of an agent its kernel
    // started: until the window ends too, while no kernel listens. Else a few attempts.
    const waitFirst =
      !this.everConnected &&
      !this.outageSince &&
      this.opts.waitForKernel &&
      this.opts.reconnect &&
      this.opts.reconnectWindowMs > 0;
    const deadline = this.outageSince
      ? this.outageSince + this.opts.reconnectWindowMs
      : waitFirst
        ? Date.now() + this.opts.reconnectWindowMs
        : 0;
    const attempts = this.everConnected && this.opts.reconnect ? this.opts.reconnectAttempts : 1;
    for (let i = 0; deadline ? Date.now() < deadline && !this.closed : i < attempts; i++) {
      try {
        const s = await this.transport();
        if (this.closed) {
          s.destroy();
          break;
        }
        this.attach(s);
        this.everConnected = true;
        this.carryOver(s);
        return s;
      } catch (e) {
        last = e as Error;
        // Waiting for a kernel that is not listening yet, not for a socket this process may not open.
        if (waitFirst && !NO_KERNEL.has((e as NodeJS.ErrnoException).code ?? '')) break;
        const pause = Math.min(this.opts.reconnectDelayMs * 2 ** Math.min(i, 16), deadline ? 500 : 2000);
        await new Promise((r) =>
          setTimeout(r, Math.min(pause, deadline ? Math.max(0, deadline - Date.now()) : pause)),
        );
      }
    }
    const err = new ConnectionClosedError(
      this.outageSince
        ? `the connection to the Clove kernel dropped and could not be opened again within ${this.opts.reconnectWindowMs} ms: ${last?.message ?? 'client closed'}`
        : waitFirst && NO_KERNEL.has((last as NodeJS.ErrnoException | null)?.code ?? '')
          ? `cannot connect to the Clove kernel: no kernel listened within ${this.opts.reconnectWindowMs} ms: ${last?.message ?? 'client closed'}`
          : `cannot connect to the Clove kernel: ${last?.message ?? 'client closed'}`,
    );
    if (this.outageSince) {
      this.outageSince = 0;
      this.rejectAll(err);
    }
    throw err;
  }

  /**
   * A new connection: what the old one had asked for first (push, HELLO, subscriptions, names; their
   * replies are not awaited), then the requests kept from an outage, in their order.
   */
  private carryOver(s: Duplex): void {
    const outage = this.outageSince > 0;
    this.outageSince = 0;
    const held = this.pending.splice(0);
    const internal = (op: number, body: unknown): void => {
      this.pending.push({ op, resolve: () => {}, reject: () => {} });
      this.write(s, encodeFrame(0, op, body));
    };
    // A new connection pushes nothing until asked: ask again first thing.
    if (this.pushMode.messages || this.pushMode.events) internal(Op.HELLO, { push: this.pushMode });
    else if (outage && this.helloSaid) internal(Op.HELLO, {});
    if (outage) {
      if (this.topics.size) internal(Op.SUBSCRIBE, { event_types: [...this.topics] });
      for (const n of this.names) internal(Op.REGISTER, { name: n });
    }
    for (const p of held) {
      // What a previous connection asked for itself (made again above) is not carried over: only
      // requests that are written again may wait for a reply, or the replies would shift.
      if (!p.frame) continue;
      this.pending.push(p);
      this.write(s, p.frame);
    }
    if (outage)
      for (const cb of this.reconnectHooks)
        try {
          cb();
        } catch {
          /* a hook's failure is its own */
        }
  }

  /** Called after each reconnection that ended an outage (calls kept meanwhile are being sent again). */
  onReconnect(cb: () => void): void {
    this.reconnectHooks.push(cb);
  }

  private rejectAll(err: Error): void {
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  private attach(s: Duplex): void {
    const decoder = new FrameDecoder(this.opts.maxPayload);
    this.sock = s;
    s.on('data', (chunk: Buffer) => {
      const { frames, error } = decoder.push(chunk);
      for (const f of frames) {
        this.agentId = f.agentId;
        // Pushes have their own opcode and come between replies; replies keep the order of requests.
        if (f.opcode === Op.PUSH_BINARY) {
          this.onBinaryPush(s, f.payload);
          continue;
        }
        if (f.opcode === Op.PUSH) {
          this.onPush(s, f.payload);
          continue;
        }
        if (f.opcode === Op.SEND_REFUSED) {
          this.onRefusal(s, f.payload);
          continue;
        }
        const p = this.pending.shift();
        if (!p) continue;
        clearTimeout(p.timer);
        p.resolve(f.payload);
      }
      if (error) this.drop(s, new ProtocolError(`bad frame from kernel: ${error.message}`));
    });
    s.on('error', (e) => this.drop(s, new ConnectionClosedError(e.message)));
    s.on('close', () => this.drop(s, new ConnectionClosedError('connection to the kernel closed')));
  }

  private onPush(s: Duplex, payload: Buffer): void {
    let item: { kind?: unknown };
    try {
      item = JSON.parse(payload.toString('utf8')) as { kind?: unknown };
    } catch {
      this.drop(s, new ProtocolError('pushed frame from kernel is not JSON'));
      return;
    }
    const { kind, ...rest } = item;
    if (kind === 'messages') this.pushed.message.put((rest as { messages: T.PushedMessage[] }).messages);
    else if (kind === 'message') this.pushed.message.put([rest as T.PushedMessage]);
    else if (kind === 'event') this.pushed.event.put([rest as T.PushedEvent]);
    this.pauseIfFull(s);
  }

  /** A SEND_REFUSED (it answers no request): to the onRefused handlers. */
  private onRefusal(s: Duplex, payload: Buffer): void {
    let refusal: T.SendRefused;
    try {
      refusal = JSON.parse(payload.toString('utf8')) as T.SendRefused;
    } catch {
      this.drop(s, new ProtocolError('SEND_REFUSED frame from kernel is not JSON'));
      return;
    }
    this.tellRefused(refusal);
  }

  /** Messages in the binary envelope (HELLO push.format "binary"): no JSON parsed until a message is read. */
  private onBinaryPush(s: Duplex, payload: Buffer): void {
    try {
      this.pushed.message.put(decodePushBinary(payload));
    } catch (e) {
      this.drop(s, new ProtocolError(`bad PUSH_BINARY frame from kernel: ${(e as Error).message}`));
      return;
    }
    this.pauseIfFull(s);
  }

  /** Pushed items held for the iterators, of both kinds. */
  private get heldPushes(): number {
    return this.pushed.message.held + this.pushed.event.held;
  }

  /** Bounded: a consumer that falls behind stops the reading, and the kernel keeps the rest. */
  private pauseIfFull(s: Duplex): void {
    if (this.heldPushes >= PUSH_BUFFER) s.pause();
  }

  /** An iterator took an item: read again once the held pushes are under half the bound. */
  private tookPush(): void {
    if (this.sock && this.heldPushes < PUSH_BUFFER / 2 && this.sock.isPaused()) this.sock.resume();
  }

  /** Asks the kernel to push (or stop pushing) messages and/or events on this connection. */
  async setPush(mode: { messages?: boolean; events?: boolean }): Promise<T.HelloReply> {
    // Messages come several to a frame (push.batch) in the binary envelope (push.format): the iterator
    // still yields them one by one, each parsed only when its `message` is read.
    this.pushMode = {
      messages: mode.messages === true,
      events: mode.events === true,
      batch: mode.messages === true,
      ...(mode.messages === true ? { format: 'binary' as const } : {}),
    };
    return this.syscall('HELLO', { push: this.pushMode });
  }

  /** The queue of `kind`, after asking the kernel to push that kind on first use. */
  private async pushQueue<K extends 'message' | 'event'>(kind: K): Promise<PushQueue<Pushed<K>>> {
    const key = kind === 'message' ? 'messages' : 'events';
    if (!this.pushMode[key]) await this.setPush({ ...this.pushMode, [key]: true });
    return this.pushed[kind] as unknown as PushQueue<Pushed<K>>;
  }

  private async *iterate<K extends 'message' | 'event'>(kind: K): AsyncGenerator<Pushed<K>> {
    const q = await this.pushQueue(kind);
    for (;;) {
      const batch = await q.take();
      if (!batch) return;
      this.tookPush();
      let i = 0;
      try {
        while (i < batch.length) yield batch[i++] as Pushed<K>;
      } finally {
        // Left early (break, return, throw): what this iterator took but did not yield is the next one's.
        if (i < batch.length) q.unshift(batch.slice(i) as never[]);
      }
    }
  }

  private async *iterateBatches<K extends 'message' | 'event'>(kind: K): AsyncGenerator<Pushed<K>[]> {
    const q = await this.pushQueue(kind);
    for (;;) {
      const batch = await q.take();
      if (!batch) return;
      this.tookPush();
      yield batch as Pushed<K>[];
    }
  }

  /**
   * The caller's messages as the kernel pushes them (PUSH, opted in with HELLO on first use): `for await
   * (const m of client.messages())`. Each message is taken out of the mailbox as RECV takes it (no
   * lease). The iteration ends when the client is closed (after the items already received). Held
   * pushes are bounded (PUSH_BUFFER): a consumer that falls behind stops the connection being read
   * (replies wait too) until it catches up. Leaving the loop early keeps what was not yielded for the
   * next iterator.
   */
  messages(): AsyncGenerator<T.PushedMessage> {
    return this.iterate('message');
  }

  /**
   * The same messages as `messages()`, but every message held when the loop asks, as one array (at least
   * one; the kernel pushes several per frame): for consumers built for rate, one promise per batch
   * instead of one per message. A batch handed out is the caller's, whether it finishes it or not.
   */
  messageBatches(): AsyncGenerator<T.PushedMessage[]> {
    return this.iterateBatches('message');
  }

  /** The events of the caller's subscriptions as the kernel pushes them (SUBSCRIBE chooses them). */
  events(): AsyncGenerator<T.PushedEvent> {
    return this.iterate('event');
  }

  private drop(s: Duplex, err: Error): void {
    if (this.sock !== s) return;
    this.sock = null;
    s.destroy();
    // The kernel went away (a restart, docs/restart.md): calls are kept and sent again on a new
    // connection within the window — unless a journaled step was open (its calls must not move).
    const outage =
      err instanceof ConnectionClosedError &&
      !(err instanceof TimeoutError) &&
      !this.closed &&
      this.opts.reconnect &&
      this.opts.reconnectWindowMs > 0 &&
      this.everConnected &&
      this.steps.length === 0;
    if (outage) {
      this.outageSince ||= Date.now();
      // Reconnect now, not at the next call: the kept calls are waiting.
      void this.ensure().catch(() => undefined);
      return;
    }
    this.rejectAll(err);
    if (!this.opts.reconnect) this.closed = true;
  }

  /** Sends one request and resolves with the raw reply payload. */
  raw(op: number, payload: Buffer | string | unknown = {}): Promise<Buffer> {
    let frame: Buffer;
    try {
      frame = encodeFrame(0, op, payload);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return this.request(op, frame);
  }

  /**
   * Sends one framed request. Connected, the frame is written in the caller's turn (no promise turn
   * between the call and the write: at high rates that turn was a measurable share of a call's cost);
   * else once the connection opens.
   */
  private request(op: number, frame: Buffer): Promise<Buffer> {
    const lost = this.stepsLost();
    if (lost) return Promise.reject(lost);
    if (this.sock && !this.closed) return this.enqueue(this.sock, op, frame);
    return this.ensure().then((s) => this.enqueue(s, op, frame));
  }

  /**
   * The kernel closed the journaled steps with the old connection: a call on a new one would run outside
   * them, unjournaled. The step's code must stop here (run again, it replays).
   */
  private stepsLost(): ConnectionClosedError | null {
    if (this.sock || !this.steps.length) return null;
    const lost = this.steps.splice(0);
    return new ConnectionClosedError(
      `the connection to the kernel closed inside journaled step(s) ${lost.join(', ')}: calls on a new connection would not be journaled; leave the step and run it again (it replays)`,
    );
  }

  /**
   * Writes a request that is not answered when it succeeds (SEND_BATCH `results: "none"`): nothing waits
   * for a reply, and it is not kept to be sent again on a new connection. Resolves once written.
   */
  private post(frame: Buffer): Promise<void> {
    const lost = this.stepsLost();
    if (lost) return Promise.reject(lost);
    if (this.sock && !this.closed) {
      this.write(this.sock, frame);
      return Promise.resolve();
    }
    return this.ensure().then((s) => {
      if (this.sock !== s) throw new ConnectionClosedError('connection to the kernel closed');
      this.write(s, frame);
    });
  }

  /** Queues the reply's handler and writes the frame (in an outage: when the next connection opens). */
  private enqueue(s: Duplex, op: number, frame: Buffer): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const p: Pending = { op, resolve, reject, frame };
      if (this.opts.timeoutMs > 0) {
        p.timer = setTimeout(() => {
          const err = new TimeoutError(
            `no reply to opcode 0x${op.toString(16)} within ${this.opts.timeoutMs} ms`,
          );
          // Replies are ordered: a connection with a late reply is closed. Kept in an outage: just this call.
          if (this.sock) this.drop(this.sock, err);
          else {
            const i = this.pending.indexOf(p);
            if (i >= 0) this.pending.splice(i, 1);
            reject(err);
          }
        }, this.opts.timeoutMs);
      }
      this.pending.push(p);
      // In an outage (the socket is gone again since ensure()): written when the next connection opens.
      if (this.sock === s) this.write(s, frame);
    });
  }

  /**
   * Writes one frame. The frames of one tick (pipelined calls: `Promise.all` of many sends) leave
   * together: the socket is corked at the first and uncorked on the next tick, so the stream writes
   * them in one `writev` instead of one syscall (and one kernel wake-up) per frame. Frames are whole
   * buffers and keep their order; nothing is split or merged.
   */
  private write(s: Duplex, frame: Buffer): void {
    if (this.corked !== s) {
      this.corked = s;
      s.cork();
      process.nextTick(() => {
        if (this.corked === s) this.corked = null;
        s.uncork();
      });
    }
    s.write(frame);
  }

  /** Sends one JSON request; a `success: false` reply is thrown as the KernelError of its code. */
  call<R = Record<string, unknown>>(op: number, payload: unknown = {}): Promise<R> {
    return this.raw(op, payload).then((buf) => parseReply<R>(op, buf));
  }

  /** call() with the frame already made (the EncodedMessage paths build it in one buffer). */
  private callFrame<R>(op: number, frame: Buffer): Promise<R> {
    return this.request(op, frame).then((buf) => parseReply<R>(op, buf));
  }

  /** One syscall by its contract name: the request and reply are the contract's types. */
  syscall<N extends OpName & keyof Requests>(name: N, req: Requests[N]): Promise<Replies[N]> {
    return this.call(Op[name], req);
  }

  // --- core ---------------------------------------------------------------------------------------
  hello(): Promise<T.HelloReply> {
    this.helloSaid = true;
    return this.syscall('HELLO', {});
  }
  async echo(data: string | Buffer): Promise<string> {
    return (await this.raw(Op.NOOP, Buffer.isBuffer(data) ? data : Buffer.from(data))).toString('utf8');
  }
  /** EXIT: the kernel says goodbye (the connection stays open until close()). */
  async exit(): Promise<string> {
    return (await this.raw(Op.EXIT, '')).toString('utf8');
  }
  heartbeat(): Promise<{ success: true }> {
    return this.syscall('HEARTBEAT', {});
  }

  // --- lifecycle ----------------------------------------------------------------------------------
  spawn(req: T.SpawnRequest): Promise<T.SpawnReply> {
    return this.syscall('SPAWN', req);
  }
  /** RESTART: stops the agent (SIGTERM, SIGKILL after `grace_ms`) and starts it again; the reply has its new pid. */
  restart(target: T.Target, opts: { grace_ms?: number; wait?: boolean } = {}): Promise<T.RestartReply> {
    return this.syscall('RESTART', { ...targetOf(target), ...opts });
  }

  kill(target: T.Target, opts: { grace_ms?: number; wait?: boolean } = {}): Promise<T.KillReply> {
    return this.syscall('KILL', { ...targetOf(target), ...opts });
  }
  /** LIST; `{ all_nodes: true }` on a clustered kernel (operators) adds every other node's agents. */
  list(req: Requests['LIST'] = {}): Promise<T.AgentInfo[]> {
    return this.syscall('LIST', req);
  }
  pause(target: T.Target): Promise<Replies['PAUSE']> {
    return this.syscall('PAUSE', targetOf(target));
  }
  resume(target: T.Target): Promise<Replies['RESUME']> {
    return this.syscall('RESUME', targetOf(target));
  }

  // --- IPC ------------------------------------------------------------------------------------------
  register(name: string): Promise<Replies['REGISTER']> {
    this.names.add(name);
    return this.syscall('REGISTER', { name });
  }
  /** SEND `message` (any JSON value, or an EncodedMessage) to an id or a name. */
  send(to: T.Target, message: unknown): Promise<Replies['SEND']> {
    if (message instanceof EncodedMessage) {
      const head = typeof to === 'number' ? targetHead(to, undefined) : targetHead(undefined, to);
      return this.callFrame(
        Op.SEND,
        encodeFrameParts(0, Op.SEND, [`${head},"message":`, encodedBytes(message), '}']),
      );
    }
    return this.syscall('SEND', typeof to === 'number' ? { to, message } : { to_name: to, message });
  }
  /**
   * SEND_BATCH: many messages in one request (1 to 4096). Items are independent: the reply's `results`
   * has, per item and in order, `{delivered_to}` or the `{error, code}` SEND would have given; only a
   * request of the wrong shape (no items, more than 4096) is thrown as a whole.
   *
   * `results: "refused"`: the reply lists only the refused items, with their `index`. `results: "none"`:
   * no reply at all (the kernel does not wake this process to say all went well, as a NATS publish): the
   * promise resolves with the batch's `ref` once the frame is written, and whatever the kernel refused of
   * it (some items, or the whole request) reaches the `onRefused` handlers as a SEND_REFUSED with that
   * `ref`. Such a batch is not sent again on a new connection (reconnect): written just before the
   * connection dropped, it may or may not have been queued.
   */
  sendBatch(
    items: readonly T.BatchMessage[],
    opts?: { results?: 'all' | 'refused' },
  ): Promise<T.SendBatchReply>;
  sendBatch(items: readonly T.BatchMessage[], opts: { results: 'none' }): Promise<T.SendBatchSent>;
  sendBatch(
    items: readonly T.BatchMessage[],
    opts: { results?: 'all' | 'refused' | 'none' } = {},
  ): Promise<T.SendBatchReply | T.SendBatchSent> {
    const ref = opts.results === 'none' ? ++this.batchRefs : undefined;
    let frame: Buffer;
    try {
      if (items.some((m) => m.message instanceof EncodedMessage))
        frame = this.batchFrameEncoded(items, opts.results, ref);
      else {
        // The wire's item shape, built field by field (no spread copies: this runs per message at high rates).
        const messages = new Array<Requests['SEND_BATCH']['messages'][number]>(items.length);
        for (let i = 0; i < items.length; i++) {
          const m = items[i];
          const item: { to?: number; to_name?: string; message?: unknown } = {};
          if (m.to !== undefined) item.to = m.to;
          const name = m.toName ?? m.to_name;
          if (name !== undefined) item.to_name = name;
          if ('message' in m) item.message = m.message;
          messages[i] = item as Requests['SEND_BATCH']['messages'][number];
        }
        frame = encodeFrame(0, Op.SEND_BATCH, {
          messages,
          ...(opts.results ? { results: opts.results } : {}),
          ...(ref !== undefined ? { ref } : {}),
        });
      }
    } catch (e) {
      return Promise.reject(e as Error);
    }
    if (ref === undefined) return this.callFrame(Op.SEND_BATCH, frame);
    return this.post(frame).then(() => ({ ref }));
  }

  /** SEND_BATCH's frame with EncodedMessages: the request's JSON written around their bytes, the same wire shape. */
  private batchFrameEncoded(
    items: readonly T.BatchMessage[],
    results: 'all' | 'refused' | 'none' | undefined,
    ref: number | undefined,
  ): Buffer {
    const parts: (string | Buffer)[] = ['{"messages":['];
    // Consecutive items to one target share their head, encoded once (a burst to one peer is the
    // common case): per item only its bytes and the closing brace are added.
    let lastTo: number | undefined;
    let lastName: string | undefined;
    let head = '';
    let withMessage: Buffer | undefined;
    for (let i = 0; i < items.length; i++) {
      const m = items[i];
      const name = m.toName ?? m.to_name;
      if (i === 0 || m.to !== lastTo || name !== lastName) {
        head = targetHead(m.to, name);
        withMessage = undefined;
        lastTo = m.to;
        lastName = name;
      }
      const body = m.message instanceof EncodedMessage ? encodedBytes(m.message) : JSON.stringify(m.message);
      if (body === undefined) {
        // No message, or one JSON.stringify leaves out (undefined, a function): the field is left out.
        parts.push(`${i === 0 ? '' : ','}${head}}`);
        continue;
      }
      // `,` before every item but the first: the first item's head is made apart (its target came first).
      if (i === 0) parts.push(`${head}${head.length > 1 ? ',' : ''}"message":`);
      else parts.push((withMessage ??= Buffer.from(`,${head}${head.length > 1 ? ',' : ''}"message":`)));
      parts.push(body, CLOSE_BRACE);
    }
    parts.push(
      `]${results ? `,"results":${JSON.stringify(results)}` : ''}${ref !== undefined ? `,"ref":${ref}` : ''}}`,
    );
    return encodeFrameParts(0, Op.SEND_BATCH, parts);
  }

  /**
   * Calls `cb` with each SEND_REFUSED: what the kernel refused of a `sendBatch(…, {results: "none"})`,
   * with the `ref` that call resolved with. Refusals that came while no handler was registered are kept
   * (the last REFUSALS_KEPT; a warning says when older ones are dropped) and handed to the first handler.
   * Returns a function that removes the handler.
   */
  onRefused(cb: (refusal: T.SendRefused) => void): () => void {
    this.refusedHooks.push(cb);
    for (const r of this.refusedKept.splice(0)) this.tellRefused(r);
    return () => {
      const i = this.refusedHooks.indexOf(cb);
      if (i >= 0) this.refusedHooks.splice(i, 1);
    };
  }

  private tellRefused(refusal: T.SendRefused): void {
    if (this.refusedHooks.length === 0) {
      this.refusedKept.push(refusal);
      if (this.refusedKept.length > REFUSALS_KEPT) {
        this.refusedKept.shift();
        if (!this.refusedDropWarned) {
          this.refusedDropWarned = true;
          process.emitWarning(
            `more than ${REFUSALS_KEPT} SEND_REFUSED frames came with no onRefused handler: the oldest are dropped`,
            'CloveSendRefused',
          );
        }
      }
      return;
    }
    for (const cb of [...this.refusedHooks])
      try {
        cb(refusal);
      } catch {
        /* a handler's failure is its own */
      }
  }

  /** Takes up to `max` messages; with `timeoutMs` the kernel holds the reply until one arrives. */
  recv(opts: { max?: number; timeoutMs?: number; lease?: boolean } = {}): Promise<T.RecvReply> {
    const wait = opts.timeoutMs !== undefined;
    return this.syscall('RECV', {
      max: opts.max ?? 10,
      ...(wait ? { wait: true, timeout_ms: opts.timeoutMs } : {}),
      ...(opts.lease ? { lease: true } : {}),
    });
  }
  broadcast(message: unknown, includeSelf = false): Promise<Replies['BROADCAST']> {
    return this.syscall('BROADCAST', { message, include_self: includeSelf });
  }

  // --- state ----------------------------------------------------------------------------------------
  store(
    key: string,
    value: unknown,
    opts: { scope?: T.Scope; ttl?: number } = {},
  ): Promise<Replies['STORE']> {
    return this.syscall('STORE', { key, value, ...opts });
  }
  fetch(key: string, scope?: T.Scope): Promise<T.FetchReply> {
    return this.syscall('FETCH', scope ? { key, scope } : { key });
  }
  delete(key: string, scope?: T.Scope): Promise<Replies['DELETE']> {
    return this.syscall('DELETE', scope ? { key, scope } : { key });
  }
  keys(prefix = ''): Promise<Replies['KEYS']> {
    return this.syscall('KEYS', { prefix });
  }

  // --- tasks ----------------------------------------------------------------------------------------
  /** TASK_CREATE: a task (optionally with pending subtasks, a deadline, a failure policy, a pool). */
  taskCreate(
    description: string,
    opts: Omit<Requests['TASK_CREATE'], 'description'> = {},
  ): Promise<Replies['TASK_CREATE']> {
    return this.syscall('TASK_CREATE', { description, ...opts });
  }
  /** TASK_ASSIGN: a new (`subtask`) or pending (`subtask_id`) subtask to an agent, or to the pool's least loaded. */
  taskAssign(
    taskId: number,
    opts: Omit<Requests['TASK_ASSIGN'], 'task_id'>,
  ): Promise<Replies['TASK_ASSIGN']> {
    return this.syscall('TASK_ASSIGN', { task_id: taskId, ...opts });
  }
  taskStatus(taskId: number): Promise<Replies['TASK_STATUS']> {
    return this.syscall('TASK_STATUS', { task_id: taskId });
  }
  /** TASK_COMPLETE: the caller's open subtask of the task (or `subtask_id`); `error` fails it. */
  taskComplete(
    taskId: number,
    opts: Omit<Requests['TASK_COMPLETE'], 'task_id'> = {},
  ): Promise<Replies['TASK_COMPLETE']> {
    return this.syscall('TASK_COMPLETE', { task_id: taskId, ...opts });
  }
  taskList(opts: Requests['TASK_LIST'] = {}): Promise<Replies['TASK_LIST']> {
    return this.syscall('TASK_LIST', opts);
  }

  // --- events ---------------------------------------------------------------------------------------
  subscribe(events: string[]): Promise<Replies['SUBSCRIBE']> {
    for (const e of events) this.topics.add(e);
    return this.syscall('SUBSCRIBE', { event_types: events });
  }
  unsubscribe(events: string[] | 'all'): Promise<Replies['UNSUBSCRIBE']> {
    if (events === 'all') this.topics.clear();
    else for (const e of events) this.topics.delete(e);
    return this.syscall('UNSUBSCRIBE', events === 'all' ? { all: true } : { event_types: events });
  }
  pollEvents(opts: { max?: number; timeoutMs?: number } = {}): Promise<T.PollEventsReply> {
    const wait = opts.timeoutMs !== undefined;
    return this.syscall('POLL_EVENTS', {
      max: opts.max ?? 100,
      ...(wait ? { wait: true, timeout_ms: opts.timeoutMs } : {}),
    });
  }
  emit(event: string, data: unknown = {}): Promise<Replies['EMIT']> {
    return this.syscall('EMIT', { event, data });
  }

  // --- permissions ----------------------------------------------------------------------------------
  getPerms(agentId?: number): Promise<Replies['GET_PERMS']> {
    return this.syscall('GET_PERMS', agentId ? { agent_id: agentId } : {});
  }
  setPerms(agentId: number, permissions: Record<string, unknown> | string): Promise<Replies['SET_PERMS']> {
    return this.syscall(
      'SET_PERMS',
      typeof permissions === 'string'
        ? { agent_id: agentId, level: permissions as never }
        : { agent_id: agentId, permissions },
    );
  }

  // --- metrics --------------------------------------------------------------------------------------
  systemMetrics(): Promise<Replies['METRICS_SYSTEM']> {
    return this.syscall('METRICS_SYSTEM', {});
  }
  agentMetrics(agentId?: number): Promise<Replies['METRICS_AGENT']> {
    return this.syscall('METRICS_AGENT', agentId ? { agent_id: agentId } : {});
  }
  allAgentMetrics(): Promise<Replies['METRICS_ALL_AGENTS']> {
    return this.syscall('METRICS_ALL_AGENTS', {});
  }
  cgroupMetrics(cgroupPath?: string): Promise<Replies['METRICS_CGROUP']> {
    return this.syscall('METRICS_CGROUP', cgroupPath ? { cgroup_path: cgroupPath } : {});
  }

  // --- quotas (docs/protocol.md "Quotas") -------------------------------------------------------------
  /** SET_QUOTA: quotas of an agent (`agent_id`/`name`) or a service (`service`); `null` removes one. */
  setQuota(req: Requests['SET_QUOTA']): Promise<Replies['SET_QUOTA']> {
    return this.syscall('SET_QUOTA', req);
  }
  /** GET_QUOTA: an agent's (default: the caller's) or a service's quotas and usage; `all` (operators). */
  getQuota(req: Requests['GET_QUOTA'] = {}): Promise<Replies['GET_QUOTA']> {
    return this.syscall('GET_QUOTA', req);
  }

  // --- the cluster (docs/cluster.md); a kernel without --cluster answers clustered: false ----------
  clusterNodes(): Promise<Replies['CLUSTER_NODES']> {
    return this.syscall('CLUSTER_NODES', {});
  }
  clusterStatus(): Promise<Replies['CLUSTER_STATUS']> {
    return this.syscall('CLUSTER_STATUS', {});
  }

  // --- acting on the world, audit, record/replay, async, worlds (docs/worlds.md), the tunnel (operators) --
  /**
   * THINK: the kernel calls the operator's provider. `messages` may carry earlier tool rounds (an
   * assistant turn's `tool_calls` as a reply gave them, then one `tool` turn per call with its
   * `tool_call_id`); `tools` and `tool_choice` let the model call functions (`tool_calls` in the reply).
   */
  think(req: Requests['THINK']): Promise<Replies['THINK']> {
    return this.syscall('THINK', req);
  }
  /**
   * THINK_STREAM: the same call, its answer streamed. `for await (const d of client.thinkStream(req))`
   * yields the pieces (`{content}` or `{tool_call: {index, id?, name?, arguments?}}`) as they come, and
   * `result` resolves to THINK's reply at the end (reading only `result` works too). Leaving the loop
   * early cancels the stream. Its THINK_STREAM_NEXT calls wait in the kernel (`waitMs` each, default
   * 5000) on this connection, whose replies keep their order: a call made meanwhile on the same client,
   * a cancel included, is answered after the next piece or that wait.
   */
  thinkStream(req: Requests['THINK_STREAM'], opts: { waitMs?: number } = {}): ThinkStream {
    return new ThinkStream(this, req, opts.waitMs ?? 5000);
  }
  /** THINK_STREAM_NEXT: the pieces buffered since the last call, waiting up to `waitMs` in the kernel. */
  thinkStreamNext(streamId: number, waitMs?: number): Promise<Replies['THINK_STREAM_NEXT']> {
    return this.syscall('THINK_STREAM_NEXT', {
      stream_id: streamId,
      ...(waitMs !== undefined ? { wait_ms: waitMs } : {}),
    });
  }
  /** THINK_STREAM_CANCEL: ends a stream; the provider call is aborted if it is still going. */
  thinkStreamCancel(streamId: number): Promise<Replies['THINK_STREAM_CANCEL']> {
    return this.syscall('THINK_STREAM_CANCEL', { stream_id: streamId });
  }
  llmReport(req: Requests['LLM_REPORT']): Promise<Replies['LLM_REPORT']> {
    return this.syscall('LLM_REPORT', req);
  }
  exec(req: Requests['EXEC']): Promise<Replies['EXEC']> {
    return this.syscall('EXEC', req);
  }
  readFile(req: Requests['READ']): Promise<Replies['READ']> {
    return this.syscall('READ', req);
  }
  writeFile(req: Requests['WRITE']): Promise<Replies['WRITE']> {
    return this.syscall('WRITE', req);
  }
  http(req: Requests['HTTP']): Promise<Replies['HTTP']> {
    return this.syscall('HTTP', req);
  }
  /** MCP_LIST_TOOLS: the operator's MCP tools this caller may call, and the servers' state (docs/mcp.md). */
  mcpListTools(req: Requests['MCP_LIST_TOOLS'] = {}): Promise<Replies['MCP_LIST_TOOLS']> {
    return this.syscall('MCP_LIST_TOOLS', req);
  }
  /** MCP_CALL: calls `server`'s tool `tool` through the kernel (rights `mcp`, quota `mcp_calls`). */
  mcpCall(req: Requests['MCP_CALL']): Promise<Replies['MCP_CALL']> {
    return this.syscall('MCP_CALL', req);
  }
  asyncPoll(req: Requests['ASYNC_POLL'] = {}): Promise<Replies['ASYNC_POLL']> {
    return this.syscall('ASYNC_POLL', req);
  }
  /** Takes finished results of `async: true` calls; with `timeoutMs` the kernel holds the reply until one is ready. */
  asyncResults(opts: { max?: number; timeoutMs?: number } = {}): Promise<Replies['ASYNC_RESULTS']> {
    const wait = opts.timeoutMs !== undefined;
    return this.syscall('ASYNC_RESULTS', {
      max: opts.max ?? 10,
      ...(wait ? { wait: true, timeout_ms: opts.timeoutMs } : {}),
    });
  }
  startRecording(req: Requests['RECORD_START'] = {}): Promise<Replies['RECORD_START']> {
    return this.syscall('RECORD_START', req);
  }
  stopRecording(): Promise<Replies['RECORD_STOP']> {
    return this.syscall('RECORD_STOP', {});
  }
  recordingStatus(req: Requests['RECORD_STATUS'] = {}): Promise<Replies['RECORD_STATUS']> {
    return this.syscall('RECORD_STATUS', req);
  }
  startReplay(req: Requests['REPLAY_START']): Promise<Replies['REPLAY_START']> {
    return this.syscall('REPLAY_START', req);
  }
  replayStatus(): Promise<Replies['REPLAY_STATUS']> {
    return this.syscall('REPLAY_STATUS', {});
  }
  getAuditLog(req: Requests['GET_AUDIT_LOG'] = {}): Promise<Replies['GET_AUDIT_LOG']> {
    return this.syscall('GET_AUDIT_LOG', req);
  }
  setAuditConfig(req: Requests['SET_AUDIT_CONFIG']): Promise<Replies['SET_AUDIT_CONFIG']> {
    return this.syscall('SET_AUDIT_CONFIG', req);
  }
  worldCreate(req: Requests['WORLD_CREATE']): Promise<Replies['WORLD_CREATE']> {
    return this.syscall('WORLD_CREATE', req);
  }
  worldDestroy(req: Requests['WORLD_DESTROY']): Promise<Replies['WORLD_DESTROY']> {
    return this.syscall('WORLD_DESTROY', req);
  }
  worldList(): Promise<Replies['WORLD_LIST']> {
    return this.syscall('WORLD_LIST', {});
  }
  worldJoin(req: Requests['WORLD_JOIN']): Promise<Replies['WORLD_JOIN']> {
    return this.syscall('WORLD_JOIN', req);
  }
  worldLeave(req: Requests['WORLD_LEAVE'] = {}): Promise<Replies['WORLD_LEAVE']> {
    return this.syscall('WORLD_LEAVE', req);
  }
  worldEvent(req: Requests['WORLD_EVENT']): Promise<Replies['WORLD_EVENT']> {
    return this.syscall('WORLD_EVENT', req);
  }
  worldState(req: Requests['WORLD_STATE']): Promise<Replies['WORLD_STATE']> {
    return this.syscall('WORLD_STATE', req);
  }
  worldSnapshot(req: Requests['WORLD_SNAPSHOT']): Promise<Replies['WORLD_SNAPSHOT']> {
    return this.syscall('WORLD_SNAPSHOT', req);
  }
  worldRestore(req: Requests['WORLD_RESTORE']): Promise<Replies['WORLD_RESTORE']> {
    return this.syscall('WORLD_RESTORE', req);
  }
  tunnelConnect(req: Requests['TUNNEL_CONNECT']): Promise<Replies['TUNNEL_CONNECT']> {
    return this.syscall('TUNNEL_CONNECT', req);
  }
  tunnelDisconnect(): Promise<Replies['TUNNEL_DISCONNECT']> {
    return this.syscall('TUNNEL_DISCONNECT', {});
  }
  tunnelStatus(): Promise<Replies['TUNNEL_STATUS']> {
    return this.syscall('TUNNEL_STATUS', {});
  }
  tunnelListRemotes(): Promise<Replies['TUNNEL_LIST_REMOTES']> {
    return this.syscall('TUNNEL_LIST_REMOTES', {});
  }
  tunnelConfig(req: Requests['TUNNEL_CONFIG']): Promise<Replies['TUNNEL_CONFIG']> {
    return this.syscall('TUNNEL_CONFIG', req);
  }

  // --- journaled steps (docs/durable.md) ---------------------------------------------------------
  async stepBegin(req: Requests['STEP_BEGIN']): Promise<Replies['STEP_BEGIN']> {
    const r = await this.syscall('STEP_BEGIN', req);
    this.steps.push(req.key);
    return r;
  }
  async stepEnd(req: Requests['STEP_END'] = {}): Promise<Replies['STEP_END']> {
    const r = await this.syscall('STEP_END', req);
    this.steps.pop();
    return r;
  }
  stepStatus(req: Requests['STEP_STATUS'] = {}): Promise<Replies['STEP_STATUS']> {
    return this.syscall('STEP_STATUS', req);
  }
  stepClear(req: Requests['STEP_CLEAR'] = {}): Promise<Replies['STEP_CLEAR']> {
    return this.syscall('STEP_CLEAR', req);
  }

  /**
   * Runs `fn` as the journaled step `key`: its THINK, HTTP and EXEC calls on this client are journaled
   * by the kernel, and when the same step runs again (after a crash or restart) the same calls are
   * answered from the journal. The step is ended as complete when `fn` resolves; when it throws, it is
   * left in progress (it replays next time) and the error is rethrown. Calls `fn` makes on other
   * connections are not in the step.
   */
  async step<R>(
    key: string,
    fn: (begun: Replies['STEP_BEGIN']) => Promise<R> | R,
    opts: Omit<Requests['STEP_BEGIN'], 'key'> = {},
  ): Promise<R> {
    const begun = await this.stepBegin({ ...opts, key });
    let out: R;
    try {
      out = await fn(begun);
    } catch (e) {
      // Left in progress; a connection that is gone has closed the step already.
      await this.stepEnd({ key, complete: false }).catch(() => undefined);
      throw e;
    }
    await this.stepEnd({ key, complete: true });
    return out;
  }

  /** Closes the connection; calls in flight fail with ConnectionClosedError. */
  close(): void {
    this.closed = true;
    const s = this.sock;
    if (s) this.drop(s, new ConnectionClosedError('client closed'));
    else this.rejectAll(new ConnectionClosedError('client closed'));
    this.pushed.message.end();
    this.pushed.event.end();
  }
}

/**
 * A streamed THINK (CloveClient.thinkStream): THINK_STREAM, then THINK_STREAM_NEXT until the end, started
 * at once. The pieces wait here until they are iterated (no more than the answer itself); `result`
 * settles with THINK's reply, or THINK's error.
 */
export class ThinkStream implements AsyncIterable<T.ThinkDelta> {
  /** THINK's reply once the answer is complete; rejects with the error that ended the stream. */
  readonly result: Promise<Replies['THINK']>;
  /** The kernel's id of the stream (THINK_STREAM's reply). */
  readonly id: Promise<number>;
  private readonly pieces = new PushQueue<T.ThinkDelta>();
  private failure: Error | null = null;
  private iterated = false;
  private cancelled = false;

  constructor(
    private readonly client: CloveClient,
    req: Requests['THINK_STREAM'],
    private readonly waitMs: number,
  ) {
    this.id = client.syscall('THINK_STREAM', req).then((r) => r.stream_id);
    this.result = this.pump();
    // Settled whether or not anybody awaits them: a failure reaches the iterator and `result`.
    this.result.catch(() => {});
    this.id.catch(() => {});
  }

  private async pump(): Promise<Replies['THINK']> {
    try {
      const id = await this.id;
      for (;;) {
        const r = await this.client.thinkStreamNext(id, this.waitMs);
        this.pieces.put(r.deltas);
        if (r.done) return r.result!;
        if (this.cancelled) throw new CloveError('THINK stream cancelled before its end');
      }
    } catch (e) {
      this.failure = this.cancelled ? new CloveError('THINK stream cancelled before its end') : (e as Error);
      throw this.failure;
    } finally {
      this.pieces.end();
    }
  }

  /** The pieces in order; throws the stream's error after the pieces that came before it. Once only. */
  async *[Symbol.asyncIterator](): AsyncGenerator<T.ThinkDelta> {
    if (this.iterated) throw new CloveError('a THINK stream can be iterated once');
    this.iterated = true;
    let ended = false;
    try {
      for (;;) {
        const pieces = await this.pieces.take();
        if (!pieces) break;
        yield* pieces;
      }
      ended = true;
      if (this.failure) throw this.failure;
    } finally {
      // Left early (break, return, a throw in the loop): the rest is not wanted.
      if (!ended) void this.cancel().catch(() => {});
    }
  }

  /** Ends the stream in the kernel (its provider call aborted); `result` rejects unless it was complete. */
  async cancel(): Promise<void> {
    this.cancelled = true;
    await this.client.thinkStreamCancel(await this.id).catch((e: unknown) => {
      // Already finished and taken: nothing left to cancel.
      if (!(e instanceof NotFoundError)) throw e;
    });
  }
}

function targetOf(t: T.Target): { id: number } | { name: string } {
  return typeof t === 'number' ? { id: t } : { name: t };
}
