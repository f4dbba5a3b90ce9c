/**
 * The TypeScript client of the Clove kernel: typed, promise-based, pipelined (many calls in flight on
 * one connection; replies come back in order), with reconnection. The transport is injected so tests
 * can swap it.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { encodeFrame, FrameDecoder } from '../../kernel/protocol/frame.js';
import { Op } from '../../kernel/protocol/opcodes.js';
import { ConnectionClosedError, ProtocolError, TimeoutError, kernelError } from './errors.js';
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

export interface ClientOptions {
  /** Defaults to $CLOVE_SOCKET, else /tmp/clove.sock. */
  socketPath?: string;
  transport?: Transport;
  /** Reconnect on the next call after the connection dropped (default true), with this many attempts. */
  reconnect?: boolean;
  reconnectAttempts?: number;
  reconnectDelayMs?: number;
  /** Per-call timeout in ms (0: none; the default). A timed-out connection is closed: replies are ordered. */
  timeoutMs?: number;
  maxPayload?: number;
}

interface Pending {
  op: number;
  resolve: (v: Buffer) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

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

  constructor(options: ClientOptions = {}) {
    this.transport =
      options.transport ?? unixTransport(options.socketPath ?? process.env.CLOVE_SOCKET ?? '/tmp/clove.sock');
    this.opts = {
      reconnect: options.reconnect ?? true,
      reconnectAttempts: options.reconnectAttempts ?? 20,
      reconnectDelayMs: options.reconnectDelayMs ?? 50,
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
    const attempts = this.everConnected && this.opts.reconnect ? this.opts.reconnectAttempts : 1;
    for (let i = 0; i < attempts; i++) {
      try {
        const s = await this.transport();
        this.attach(s);
        this.everConnected = true;
        return s;
      } catch (e) {
        last = e as Error;
        await new Promise((r) => setTimeout(r, Math.min(this.opts.reconnectDelayMs * 2 ** i, 2000)));
      }
    }
    throw new ConnectionClosedError(`cannot connect to the Clove kernel: ${last?.message}`);
  }

  private attach(s: Duplex): void {
    const decoder = new FrameDecoder(this.opts.maxPayload);
    this.sock = s;
    s.on('data', (chunk: Buffer) => {
      const { frames, error } = decoder.push(chunk);
      for (const f of frames) {
        this.agentId = f.agentId;
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

  private drop(s: Duplex, err: Error): void {
    if (this.sock !== s) return;
    this.sock = null;
    s.destroy();
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    if (!this.opts.reconnect) this.closed = true;
  }

  /** Sends one request and resolves with the raw reply payload. */
  async raw(op: number, payload: Buffer | string | unknown = {}): Promise<Buffer> {
    const s = await this.ensure();
    return new Promise<Buffer>((resolve, reject) => {
      const p: Pending = { op, resolve, reject };
      if (this.opts.timeoutMs > 0) {
        p.timer = setTimeout(
          () =>
            this.drop(
              s,
              new TimeoutError(`no reply to opcode 0x${op.toString(16)} within ${this.opts.timeoutMs} ms`),
            ),
          this.opts.timeoutMs,
        );
      }
      this.pending.push(p);
      s.write(encodeFrame(0, op, payload));
    });
  }

  /** Sends one JSON request; a `success: false` reply is thrown as the KernelError of its code. */
  async call<R = Record<string, unknown>>(op: number, payload: unknown = {}): Promise<R> {
    const buf = await this.raw(op, payload);
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

  // --- core ---------------------------------------------------------------------------------------
  hello(): Promise<T.HelloReply> {
    return this.call(Op.HELLO, {});
  }
  async echo(data: string | Buffer): Promise<string> {
    return (await this.raw(Op.NOOP, Buffer.isBuffer(data) ? data : Buffer.from(data))).toString('utf8');
  }
  heartbeat(): Promise<{ success: true }> {
    return this.call(Op.HEARTBEAT, {});
  }

  // --- lifecycle ----------------------------------------------------------------------------------
  spawn(req: T.SpawnRequest): Promise<T.SpawnReply> {
    return this.call(Op.SPAWN, req);
  }
  kill(target: T.Target, opts: { grace_ms?: number; wait?: boolean } = {}): Promise<T.KillReply> {
    return this.call(Op.KILL, { ...targetOf(target), ...opts });
  }
  list(): Promise<T.AgentInfo[]> {
    return this.call(Op.LIST, {});
  }
  pause(target: T.Target): Promise<{ success: true; paused: true; agent_id: number }> {
    return this.call(Op.PAUSE, targetOf(target));
  }
  resume(target: T.Target): Promise<{ success: true; resumed: true; agent_id: number }> {
    return this.call(Op.RESUME, targetOf(target));
  }

  // --- IPC ------------------------------------------------------------------------------------------
  register(name: string): Promise<{ success: true; agent_id: number; name: string }> {
    return this.call(Op.REGISTER, { name });
  }
  send(to: T.Target, message: unknown): Promise<{ success: true; delivered_to: number }> {
    return this.call(Op.SEND, typeof to === 'number' ? { to, message } : { to_name: to, message });
  }
  /** Takes up to `max` messages; with `timeoutMs` the kernel holds the reply until one arrives. */
  recv(opts: { max?: number; timeoutMs?: number } = {}): Promise<T.RecvReply> {
    const wait = opts.timeoutMs !== undefined;
    return this.call(Op.RECV, {
      max: opts.max ?? 10,
      ...(wait ? { wait: true, timeout_ms: opts.timeoutMs } : {}),
    });
  }
  broadcast(
    message: unknown,
    includeSelf = false,
  ): Promise<{ success: true; delivered_count: number; failed_count: number }> {
    return this.call(Op.BROADCAST, { message, include_self: includeSelf });
  }

  // --- state ----------------------------------------------------------------------------------------
  store(
    key: string,
    value: unknown,
    opts: { scope?: T.Scope; ttl?: number } = {},
  ): Promise<{ success: true; key: string }> {
    return this.call(Op.STORE, { key, value, ...opts });
  }
  fetch(key: string, scope?: T.Scope): Promise<T.FetchReply> {
    return this.call(Op.FETCH, scope ? { key, scope } : { key });
  }
  delete(key: string, scope?: T.Scope): Promise<{ success: true; deleted: boolean }> {
    return this.call(Op.DELETE, scope ? { key, scope } : { key });
  }
  keys(prefix = ''): Promise<{ success: true; keys: string[]; count: number }> {
    return this.call(Op.KEYS, { prefix });
  }

  // --- events ---------------------------------------------------------------------------------------
  subscribe(events: string[]): Promise<{ success: true; subscribed: string[] }> {
    return this.call(Op.SUBSCRIBE, { event_types: events });
  }
  unsubscribe(events: string[] | 'all'): Promise<{ success: true; unsubscribed: string[] }> {
    return this.call(Op.UNSUBSCRIBE, events === 'all' ? { all: true } : { event_types: events });
  }
  pollEvents(opts: { max?: number; timeoutMs?: number } = {}): Promise<T.PollReply> {
    const wait = opts.timeoutMs !== undefined;
    return this.call(Op.POLL_EVENTS, {
      max: opts.max ?? 100,
      ...(wait ? { wait: true, timeout_ms: opts.timeoutMs } : {}),
    });
  }
  emit(event: string, data: unknown = {}): Promise<{ success: true; event: string; delivered_to: number }> {
    return this.call(Op.EMIT, { event, data });
  }

  // --- permissions ----------------------------------------------------------------------------------
  getPerms(
    agentId?: number,
  ): Promise<{ success: true; agent_id: number; permissions: Record<string, unknown> }> {
    return this.call(Op.GET_PERMS, agentId ? { agent_id: agentId } : {});
  }
  setPerms(
    agentId: number,
    permissions: Record<string, unknown> | string,
  ): Promise<{ success: true; agent_id: number }> {
    return this.call(
      Op.SET_PERMS,
      typeof permissions === 'string'
        ? { agent_id: agentId, level: permissions }
        : { agent_id: agentId, permissions },
    );
  }

  /** Closes the connection; calls in flight fail with ConnectionClosedError. */
  close(): void {
    this.closed = true;
    const s = this.sock;
    if (s) this.drop(s, new ConnectionClosedError('client closed'));
  }
}

function targetOf(t: T.Target): { id: number } | { name: string } {
  return typeof t === 'number' ? { id: t } : { name: t };
}
