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
import type { Frame } from '../../protocol/index.js';
import { Connection, type Dispatcher as ConnectionHooks, type Reply } from './connection.js';
import type { Dispatcher } from './dispatch.js';
import { KernelStartError } from './errors.js';
import type { Door, PeerCred, Principal, Principals } from './principals.js';

export interface Transport {
  /** Reported to handlers as `ctx.transport.kind`, e.g. `unix:agent`. */
  readonly kind: string;
  /** Starts accepting; each accepted socket whose peer was identified is handed to `accept`. */
  listen(accept: (sock: net.Socket, principal: Principal) => void): Promise<void>;
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
  log: Logger;
}

/** A Unix stream socket whose peers are identified by SO_PEERCRED (docs/protocol.md §2). */
export class UnixTransport implements Transport {
  readonly kind: string;
  private server: net.Server | null = null;

  constructor(private readonly o: UnixTransportOptions) {
    this.kind = `unix:${o.door}`;
  }

  async listen(accept: (sock: net.Socket, principal: Principal) => void): Promise<void> {
    await claimSocketPath(this.o.path);
    this.server = await new Promise<net.Server>((resolve, reject) => {
      const server = net.createServer({ pauseOnConnect: true }, (sock) => void this.accept(sock, accept));
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

  private async accept(sock: net.Socket, accept: (s: net.Socket, p: Principal) => void): Promise<void> {
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
}

export class Server implements ConnectionHooks {
  readonly connections = new Set<Connection>();
  private readonly transports: Transport[] = [];

  constructor(private readonly o: ServerOptions) {}

  /** Starts the transports in order: the last one accepting means the kernel is fully up. */
  async listen(transports: Transport[]): Promise<void> {
    for (const t of transports) {
      await t.listen((sock, principal) => {
        const conn = new Connection(sock, principal, t.kind, this, this.o.maxPayload);
        this.connections.add(conn);
        this.o.opened(conn);
        sock.resume();
      });
      this.transports.push(t);
    }
  }

  /** Stops accepting on every transport. */
  stopListening(): void {
    for (const t of this.transports) t.close();
  }

  /** Closes every connection of `id` at once (its process tree died: parked calls take nothing). */
  dropConnectionsOf(id: number): void {
    for (const c of this.connections) if (c.principal.id === id) c.close();
  }

  closeAll(): void {
    for (const c of this.connections) c.close();
  }

  dispatch(conn: Connection, frame: Frame): Reply | Promise<Reply> {
    return this.o.dispatcher.dispatch(conn, frame);
  }

  closed(conn: Connection): void {
    this.connections.delete(conn);
    this.o.closed(conn);
  }

  badFrame(conn: Connection, message: string): void {
    this.o.log.warn(
      { conn: conn.principal.id, role: conn.principal.role, error: message },
      'bad frame: closing the connection',
    );
  }
}

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
