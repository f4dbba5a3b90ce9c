/**
 * Listen, accept, identify: the kernel's transports and the set of live connections. A transport
 * accepts sockets and says who is on the other end; the server wraps each in a Connection and feeds
 * its frames to the dispatcher. The Unix sockets are the transports today; a relay or an HTTP bridge is
 * another Transport added in kernel.ts, and every family serves it unchanged.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { encodeFrame, HEADER_SIZE, MAGIC, Op, type Frame } from '../../protocol/index.js';
import { Connection, type Dispatcher as ConnectionHooks, type Reply } from './connection.js';
import type { ConnStream, FastPath, NativeSocket } from './native-socket.js';
import type { Dispatcher } from './dispatch.js';
import { errorReply, KernelStartError, QuotaExceededError } from './errors.js';
import { nofileLimit } from './rlimits.js';
import type { Door, PeerCred, Principal, Principals } from './principals.js';

/** Hands an accepted, identified socket (or, on the fast path, the reactor's connection) to the server. */
export type Accept = (sock: ConnStream, principal: Principal) => void;

export interface Transport {
  /** Reported to handlers as `ctx.transport.kind`, e.g. `unix:agent`. */
  readonly kind: string;
  /** Starts accepting; each accepted socket whose peer was identified is handed to `accept`. */
  listen(accept: Accept): Promise<void>;
  /** Stops accepting and removes what it created (socket files). */
  close(): void;
}

export interface UnixTransportOptions {
  path: string;
  /** File mode of the socket: 0600 for operators, 0666 for agents (in a 0711 directory). */
  mode: number;
  door: Door;
  principals: Principals;
  peerCredentials(sock: net.Socket): PeerCred;
  /** Refuse new connections (the kernel is stopping). */
  closing(): boolean;
  /**
   * File descriptors kept for operators: agents and clients are refused while fewer are left
   * (KernelOptions.operatorReserveFds). Default 0.
   */
  reserveFds?: number;
  /** With the fast path on: identified sockets are adopted by its reactor (docs/fastpath.md). */
  fastPath?: FastPath;
  log: Logger;
}

/** A Unix stream socket whose peers are identified by SO_PEERCRED (docs/protocol.md §2). */
export class UnixTransport implements Transport {
  readonly kind: string;
  private server: net.Server | null = null;

  constructor(private readonly o: UnixTransportOptions) {
    this.kind = `unix:${o.door}`;
  }

  async listen(accept: Accept): Promise<void> {
    await claimSocketPath(this.o.path);
    this.server = await new Promise<net.Server>((resolve, reject) => {
      // Half-open: a client's EOF means "no more requests", not "drop the replies" (connection.ts).
      const server = net.createServer(
        { pauseOnConnect: true, allowHalfOpen: true },
        (sock) => void this.accept(sock, accept),
      );
      server.maxConnections = 65536;
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new KernelStartError(`cannot listen on ${this.o.path}: ${e.code ?? e.message}`, 3)),
      );
      // The socket file is created with the umask; narrow it before anybody can connect.
      const old = process.umask(0o177);
      server.listen(this.o.path, () => {
        process.umask(old);
        fs.chmodSync(this.o.path, this.o.mode);
        server.on('error', (e) => this.o.log.error({ err: e }, 'listener error'));
        resolve(server);
      });
    });
  }

  private async accept(sock: net.Socket, accept: Accept): Promise<void> {
    fdGauge.track(sock);
    const reserve = this.o.reserveFds ?? 0;
    // Nobody but agents comes in on the agents' socket: refuse before identifying when fds run low.
    if (this.o.door === 'agent' && !fdGauge.admit('agent', reserve, this.o.log)) {
      sock.destroy();
      return;
    }
    let principal: Principal | null = null;
    try {
      principal = await this.o.principals.identify(this.o.peerCredentials(sock), this.o.door);
      if (!principal && this.o.door === 'agent')
        this.o.log.warn('refused a non-agent connection on the agent socket');
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, 'cannot identify connection');
    }
    if (!principal || this.o.closing()) {
      this.o.log.debug({ door: this.o.door, closing: this.o.closing() }, 'connection refused');
      sock.destroy();
      return;
    }
    if (principal.role !== 'operator' && !fdGauge.admit(principal.role, reserve, this.o.log)) {
      sock.destroy();
      return;
    }
    if (this.o.fastPath) {
      // Accepted paused (pauseOnConnect) and not read since: the reactor gets the whole stream.
      let adopted: NativeSocket;
      try {
        adopted = this.o.fastPath.adopt(sock, principal.id);
      } catch (e) {
        this.o.log.warn({ err: (e as Error).message }, 'fast path: cannot adopt connection');
        sock.destroy();
        return;
      }
      // The reactor holds a dup of the descriptor until the connection closes.
      fdGauge.track(adopted);
      accept(adopted, principal);
      return;
    }
    accept(sock, principal);
  }

  close(): void {
    this.server?.close();
    fs.rmSync(this.o.path, { force: true });
  }
}

export interface ServerOptions {
  dispatcher: Dispatcher;
  maxPayload: number;
  log: Logger;
  /** A connection opened (after identification). */
  opened(conn: Connection): void;
  /** A connection closed: release what it held. */
  closed(conn: Connection): void;
  /** A connection's peer shut its side (end of file): often its process is exiting. */
  inputEnded?(conn: Connection): void;
  /** How many connections a principal may hold open at once (its `connections` budget). */
  connectionBudget(p: Principal): number;
}

/** Over-budget sockets waiting to be told so, per principal; beyond this they are dropped unanswered. */
const MAX_REFUSALS_PER_PRINCIPAL = 16;
/** How long an over-budget socket may take to send its first request header. */
const REFUSAL_TIMEOUT_MS = 2000;

export class Server implements ConnectionHooks {
  readonly connections = new Set<Connection>();
  private readonly transports: Transport[] = [];
  /** Live connections per principal id (the `connections` budget); refused ones do not count. */
  private readonly live = new Map<number, number>();
  private readonly counted = new Set<Connection>();
  /** Over-budget sockets still to be answered, with their principal's id. */
  private readonly refusals = new Map<ConnStream, number>();
  private refusalWarnedAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly o: ServerOptions) {}

  /** Starts the transports in order: the last one accepting means the kernel is fully up. */
  async listen(transports: Transport[]): Promise<void> {
    for (const t of transports) {
      await t.listen((sock, principal) => {
        const maxConnections = this.o.connectionBudget(principal);
        const used = this.live.get(principal.id) ?? 0;
        if (used >= maxConnections) {
          this.refuse(sock, principal, used, maxConnections);
          return;
        }
        this.live.set(principal.id, used + 1);
        const conn = new Connection(sock, principal, t.kind, this, this.o.maxPayload);
        this.connections.add(conn);
        this.counted.add(conn);
        this.o.opened(conn);
        sock.resume();
      });
      this.transports.push(t);
    }
  }

  /**
   * A connection beyond its principal's `connections` budget is not served: its first request is
   * answered with quota_exceeded (so the client learns why, not just that it was hung up on) and the
   * socket is destroyed. It holds no budget; at most MAX_REFUSALS_PER_PRINCIPAL wait at once, each for
   * at most REFUSAL_TIMEOUT_MS, and only the first header's bytes are kept.
   */
  private refuse(sock: ConnStream, principal: Principal, used: number, limit: number): void {
    let waiting = 0;
    for (const id of this.refusals.values()) if (id === principal.id) waiting++;
    const now = Date.now();
    if (now - this.refusalWarnedAt >= 1000) {
      this.refusalWarnedAt = now;
      this.o.log.warn(
        { conn: principal.id, role: principal.role, used, limit },
        'connection refused: over the connections budget',
      );
    }
    if (waiting >= MAX_REFUSALS_PER_PRINCIPAL) {
      sock.destroy();
      return;
    }
    this.refusals.set(sock, principal.id);
    const timer = setTimeout(() => sock.destroy(), REFUSAL_TIMEOUT_MS);
    timer.unref();
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk.subarray(0, HEADER_SIZE - head.length)]);
      if (head.length < HEADER_SIZE) return;
      sock.off('data', onData);
      sock.pause();
      const opcode = head.readUInt32LE(0) === MAGIC ? head.readUInt8(8) : Op.NOOP;
      const err = new QuotaExceededError(
        `quota exceeded: too many connections (budget connections: ${used} of ${limit})`,
        { budget: 'connections', used, limit },
      );
      // Destroyed once the reply is flushed: a peer still writing its payload gets EPIPE at once.
      sock.write(encodeFrame(principal.id, opcode, errorReply(err)), () => sock.destroy());
    };
    sock.on('data', onData);
    sock.on('end', () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      clearTimeout(timer);
      this.refusals.delete(sock);
    });
    sock.resume();
  }

  /** Stops accepting on every transport. */
  stopListening(): void {
    for (const t of this.transports) t.close();
  }

  /**
   * Closes every connection of `id` at once (its process tree died: parked calls take nothing), but those
   * whose peer `keep` names (its warm standby's, connected while parked: supervisor/standby.ts).
   */
  dropConnectionsOf(id: number, keep?: (pid: number) => boolean): void {
    for (const c of this.connections)
      if (c.principal.id === id && !(keep && c.principal.pid !== undefined && keep(c.principal.pid))) {
        c.close();
        this.uncount(c);
      }
    for (const [s, owner] of this.refusals) if (owner === id) s.destroy();
  }

  closeAll(): void {
    for (const c of this.connections) c.close();
    for (const s of this.refusals.keys()) s.destroy();
  }

  dispatch(conn: Connection, frame: Frame): Reply | Promise<Reply> {
    return this.o.dispatcher.dispatch(conn, frame);
  }

  inputEnded(conn: Connection): void {
    this.o.inputEnded?.(conn);
  }

  closed(conn: Connection): void {
    this.connections.delete(conn);
    this.uncount(conn);
    this.o.closed(conn);
  }

  /** A connection stops counting against its budget when it is closed (once, whichever way). */
  private uncount(conn: Connection): void {
    if (!this.counted.delete(conn)) return;
    const id = conn.principal.id;
    const n = (this.live.get(id) ?? 1) - 1;
    if (n > 0) this.live.set(id, n);
    else this.live.delete(id);
  }

  badFrame(conn: Connection, message: string): void {
    this.o.log.warn(
      { conn: conn.principal.id, role: conn.principal.role, error: message },
      'bad frame: closing the connection',
    );
  }
}

/** Descriptors counted again at least this often when far from the limit, and when near it. */
const FD_RECOUNT_MS = 1000;
const FD_RECOUNT_NEAR_MS = 100;
/** A stale count far from the limit is redone this long after the accept that found it stale. */
const FD_RECOUNT_DEFER_MS = 20;
/** "Near the limit": fewer than reserve + this many descriptors left by the estimate. */
const FD_NEAR_MARGIN = 256;

/**
 * The process's file descriptors, so that agents cannot take the last ones an operator needs to
 * connect and kill them. The soft RLIMIT_NOFILE is remembered (kernel/core/rlimits.ts); the descriptors in use are counted in
 * /proc/self/fd now and then, and estimated in between from the sockets accepted and closed since (the
 * part that moves fast), so that an accept costs nothing unless the kernel is near its limit. Far from
 * it, a stale count is redone shortly after the accept, not before it: the listing (0.1–0.3 ms here,
 * more with thousands of agents) would otherwise delay the first reply of a restarted agent that
 * connects more than a second after the previous connection (bench/restart.ts). Exported for its test.
 */
export class FdGauge {
  /** The soft RLIMIT_NOFILE as it is now (the kernel raises it at start: kernel/core/rlimits.ts). */
  get limit(): number {
    return nofileLimit('soft');
  }

  private sockets = 0;
  private base = { fds: 0, sockets: 0, at: Number.NEGATIVE_INFINITY };
  private warnedAt = Number.NEGATIVE_INFINITY;
  private refusedSinceWarning = 0;
  private recountTimer: NodeJS.Timeout | undefined;

  /** Counts an accepted socket (or an adopted connection's descriptor) until it closes. */
  track(sock: { once(event: 'close', fn: () => void): unknown }): void {
    this.sockets++;
    sock.once('close', () => this.sockets--);
  }

  /**
   * Descriptors left: the estimate. A stale estimate near the limit is counted again now; far from it,
   * soon after (the estimate stands for this accept).
   */
  left(reserve: number): number {
    if (!Number.isFinite(this.limit)) return Number.POSITIVE_INFINITY;
    let used = this.base.fds + this.sockets - this.base.sockets;
    const near = this.limit - used < reserve + FD_NEAR_MARGIN;
    if (Date.now() - this.base.at > (near ? FD_RECOUNT_NEAR_MS : FD_RECOUNT_MS)) {
      if (near || this.base.at === Number.NEGATIVE_INFINITY) {
        const fds = this.recount();
        if (fds === null) return Number.POSITIVE_INFINITY;
        used = fds;
      } else {
        this.recountTimer ??= setTimeout(() => {
          this.recountTimer = undefined;
          this.recount();
        }, FD_RECOUNT_DEFER_MS).unref();
      }
    }
    return this.limit - used;
  }

  private recount(): number | null {
    const fds = countOpenFds();
    if (fds !== null) this.base = { fds, sockets: this.sockets, at: Date.now() };
    return fds;
  }

  /** True when a non-operator connection may have a descriptor; warns at most once a second when not. */
  admit(role: string, reserve: number, log: Logger): boolean {
    if (reserve <= 0) return true;
    const left = this.left(reserve);
    if (left >= reserve) return true;
    this.refusedSinceWarning++;
    const now = Date.now();
    if (now - this.warnedAt >= 1000) {
      log.warn(
        { role, fds_left: left, reserve, limit: this.limit, refused: this.refusedSinceWarning },
        'file descriptors low: refusing agent and client connections (kept for operators)',
      );
      this.warnedAt = now;
      this.refusedSinceWarning = 0;
    }
    return false;
  }
}

/** Descriptors open in this process, or null without /proc. */
function countOpenFds(): number | null {
  try {
    // The listing holds a descriptor of its own while it reads.
    return fs.readdirSync('/proc/self/fd').length - 1;
  } catch {
    return null;
  }
}

/** Descriptors are a per-process resource: one gauge for every transport of every kernel in it. */
const fdGauge = new FdGauge();

/**
 * Makes `file` free for a new socket: a live kernel answering there is an error; a stale socket is
 * removed; anything that is not a socket is never deleted.
 */
export async function claimSocketPath(file: string): Promise<void> {
  if (Buffer.byteLength(file) > 107)
    throw new KernelStartError(`socket path too long (max 107 bytes): ${file}`, 2);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    return;
  }
  if (!st.isSocket())
    throw new KernelStartError(`${file} exists and is not a socket; refusing to remove it`, 3);
  const live = await new Promise<boolean>((resolve) => {
    const s = net.connect(file);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (live) throw new KernelStartError(`another kernel is running on ${file}`, 4);
  fs.rmSync(file, { force: true });
}
