/**
 * The fast path's side of a connection in JavaScript (docs/fastpath.md). With `fastPath` on, the Unix
 * transports hand every identified socket to the reactor thread (the addon's `Reactor`), which owns it
 * from then on; the Connection gets a NativeSocket instead of the net.Socket: the same events and write
 * calls (ConnStream), carried over the reactor's event batches and `write()`.
 */
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import type {
  NativeMailStore,
  NativePushMode,
  NativeReactor,
  NativeReactorEvent,
  CloveNative,
} from '../../native/index.js';
import { loadNative } from '../sandbox/native.js';

/** What a Connection uses of its socket: a net.Socket, or a NativeSocket over the reactor. */
export interface ConnStream {
  on(event: 'data', fn: (chunk: Buffer) => void): unknown;
  on(event: 'end' | 'drain' | 'close', fn: () => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  off(event: 'data', fn: (chunk: Buffer) => void): unknown;
  off(event: 'drain', fn: () => void): unknown;
  write(data: Buffer, cb?: (err?: Error | null) => void): boolean;
  cork(): void;
  uncork(): void;
  readonly writableLength: number;
  readonly destroyed: boolean;
  pause(): unknown;
  resume(): unknown;
  isPaused(): boolean;
  end(): unknown;
  destroy(): unknown;
  /** The next bytes written answer `n` requests (the reactor holds later fast calls until they are). */
  answers?(n: number): void;
  /** The reactor pushes this connection's messages itself (HELLO push on the fast path). */
  setPush?(mode: NativePushMode): void;
}

export type { NativePushMode };

/**
 * An adopted connection as a stream. Writes under a cork gather here and leave in one `reactor.write`
 * at the last uncork; other writes go at once (the reactor writes what the socket takes and queues the
 * rest). `writableLength` is what the reactor last reported unsent plus what is gathered here.
 */
export class NativeSocket extends EventEmitter implements ConnStream {
  private destroyed_ = false;
  private paused = false;
  private corks = 0;
  private gathered: Buffer[] = [];
  private gatheredBytes = 0;
  private answered = 0;
  private unsent = 0;
  /** Write callbacks waiting for the reactor to report its queue below the mark (`drain`). */
  private waiting: (() => void)[] = [];

  constructor(
    private readonly reactor: NativeReactor,
    readonly conn: number,
  ) {
    super();
  }

  get destroyed(): boolean {
    return this.destroyed_;
  }

  get writableLength(): number {
    return this.unsent + this.gatheredBytes;
  }

  answers(n: number): void {
    this.answered += n;
  }

  /** Rule 4: with `false` every frame of this connection goes to JavaScript (a syscall observer needs them). */
  setFast(on: boolean): void {
    if (!this.destroyed_) this.reactor.setFast(this.conn, on);
  }

  /** Rule 6: the reactor writes PUSH frames of this principal's messages (HELLO `push.messages`). */
  setPush(mode: NativePushMode): void {
    if (!this.destroyed_) this.reactor.setPush(this.conn, mode);
  }

  write(data: Buffer, cb?: (err?: Error | null) => void): boolean {
    if (this.destroyed_) return false;
    if (this.corks > 0 && data.length > 0) {
      this.gathered.push(data);
      this.gatheredBytes += data.length;
    } else {
      this.flush(data);
    }
    if (cb) {
      if (this.writableLength === 0) process.nextTick(cb);
      else this.waiting.push(cb);
    }
    return this.writableLength === 0;
  }

  cork(): void {
    this.corks++;
  }

  uncork(): void {
    if (this.corks > 0 && --this.corks === 0) this.flush();
  }

  /** Hands what is gathered (and `extra`) to the reactor in one write. */
  private flush(extra?: Buffer): void {
    if (this.destroyed_) return;
    if (extra) {
      if (this.gathered.length === 0) return this.send(extra);
      this.gathered.push(extra);
    }
    if (this.gathered.length === 0 && this.answered === 0) return;
    const data = this.gathered.length === 1 ? this.gathered[0] : Buffer.concat(this.gathered);
    this.gathered = [];
    this.gatheredBytes = 0;
    this.send(data);
  }

  private send(data: Buffer): void {
    const answered = this.answered;
    this.answered = 0;
    this.unsent = this.reactor.write(this.conn, data, answered);
    if (this.writableLength === 0 && this.waiting.length) process.nextTick(() => this.callBack());
  }

  pause(): this {
    if (!this.paused && !this.destroyed_) this.reactor.pause(this.conn);
    this.paused = true;
    return this;
  }

  resume(): this {
    if (this.paused && !this.destroyed_) this.reactor.resume(this.conn);
    this.paused = false;
    return this;
  }

  isPaused(): boolean {
    return this.paused;
  }

  /** Ends the kernel's side once everything written is out (the reactor shuts down its write side). */
  end(): this {
    if (this.destroyed_) return this;
    this.corks = 0;
    this.flush();
    this.reactor.end(this.conn);
    return this;
  }

  /** Closes at once; 'close' follows on the next tick, as on a net.Socket. */
  destroy(): this {
    if (this.destroyed_) return this;
    this.reactor.destroy(this.conn);
    this.gone();
    return this;
  }

  /** The reactor's event for this connection. */
  event(e: NativeReactorEvent): void {
    if (this.destroyed_) return;
    switch (e.type) {
      case 'data':
        this.emit('data', e.data);
        break;
      case 'end':
        this.emit('end');
        break;
      case 'drain':
        this.unsent = e.unsent;
        this.emit('drain');
        this.callBack();
        break;
      case 'close':
        this.gone();
        break;
    }
  }

  /** The connection is gone (destroyed here, closed by the reactor, or the reactor stopped). */
  gone(): void {
    if (this.destroyed_) return;
    this.destroyed_ = true;
    this.gathered = [];
    this.gatheredBytes = 0;
    this.unsent = 0;
    process.nextTick(() => {
      this.callBack();
      this.emit('close', false);
    });
  }

  private callBack(): void {
    const cbs = this.waiting;
    this.waiting = [];
    for (const cb of cbs) cb();
  }
}

export interface FastPathOptions {
  maxPayload: number;
  /** The mail store the kernel's services use (NativePostOffice's); a new one when absent (tests). */
  store?: NativeMailStore;
  /**
   * Whether a principal's connections may be served natively now: false while something must see each of
   * its calls in JavaScript (an agent's watchdog, log_syscalls, recording). Asked at adoption and by
   * refresh(). Default: always.
   */
  fastFor?: (principal: number) => boolean;
  /** The kernel-wide limit of queued message bytes (KernelOptions.maxQueuedBytes). */
  queuedBytesLimit: number;
  /** The most the reactor polls before sleeping (KernelOptions.fastPathPollUs resolved); absent or 0: never. */
  pollUs?: number;
  maxReplyBytes: number;
  maxDepth: number;
}

/**
 * One per kernel with the fast path on: the mail store and the reactor thread, and the NativeSockets of
 * the connections it adopted (the reactor's events are routed to them by connection id).
 */
export class FastPath {
  readonly store: NativeMailStore;
  readonly reactor: NativeReactor;
  private readonly sockets = new Map<number, NativeSocket>();
  private closed = false;

  private readonly fastFor: (principal: number) => boolean;
  private readonly principalOf = new Map<number, number>();

  constructor(o: FastPathOptions, native: CloveNative = loadNative()) {
    this.fastFor = o.fastFor ?? (() => true);
    this.store =
      o.store ??
      new native.MailStore({
        queuedBytesLimit: o.queuedBytesLimit,
        maxReplyBytes: o.maxReplyBytes,
        maxDepth: o.maxDepth,
      });
    this.reactor = new native.Reactor({
      store: this.store,
      maxPayload: o.maxPayload,
      onEvents: (events) => this.route(events),
      pollUs: o.pollUs ?? 0,
    });
  }

  /** Connections the reactor holds now. */
  get size(): number {
    return this.sockets.size;
  }

  /**
   * Hands an accepted socket to the reactor (it takes a dup of the fd) and destroys Node's socket. The
   * socket must not have been read from (the transports accept with pauseOnConnect); what was read
   * already, if anything, is passed as `initial`.
   */
  adopt(sock: net.Socket, principal: number, initial?: Buffer): NativeSocket {
    const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) throw new Error('fast path: the socket has no file descriptor');
    const fast = this.fastFor(principal);
    const conn = this.reactor.adopt(fd, { principal, fast, ...(initial ? { initial } : {}) });
    sock.destroy();
    const s = new NativeSocket(this.reactor, conn);
    this.sockets.set(conn, s);
    this.principalOf.set(conn, principal);
    s.once('close', () => {
      this.sockets.delete(conn);
      this.principalOf.delete(conn);
    });
    return s;
  }

  /** Asks `fastFor` again for every connection (an observer was switched on or off). */
  refresh(): void {
    for (const [conn, s] of this.sockets) s.setFast(this.fastFor(this.principalOf.get(conn)!));
  }

  private route(events: NativeReactorEvent[]): void {
    for (const e of events) this.sockets.get(e.conn)?.event(e);
  }

  /** Stops the reactor thread (every connection is closed) and reports each socket closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sockets.values()) s.gone();
    this.reactor.close();
  }
}
