/**
 * The Clove kernel: listens on the operator and agent sockets, decides who each connection is, and
 * routes syscalls to the services (supervisor, post office, state store, event bus).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFile } from 'node:child_process';
import pino from 'pino';
import { type KernelOptions, defaultOptions } from './config.js';
import { EventBus, type KernelEventType } from './events/bus.js';
import { PostOffice } from './ipc/mailboxes.js';
import { preset, type Permissions } from './perms/permissions.js';
import { Connection, type Dispatcher, type Principal, type Reply } from './server/connection.js';
import { StateStore } from './state/store.js';
import { AgentLogs } from './supervisor/logs.js';
import { PlainSpawner } from './supervisor/plain-spawner.js';
import { Supervisor, type AgentRecord } from './supervisor/supervisor.js';
import type { Frame } from './protocol/frame.js';
import { errorReply, KernelStartError, SpawnError } from './errors.js';
export { KernelStartError } from './errors.js';
import { parseObject } from './validate.js';
import { handlers, type Handler } from './syscalls/index.js';
import { loadSandbox, type SandboxRuntime } from './sandbox-runtime.js';
import { opName } from './protocol/opcodes.js';

export { KERNEL_VERSION } from './version.js';

export interface Caller {
  conn: Connection;
  principal: Principal;
  perms: Permissions;
}

export class Kernel implements Dispatcher {
  readonly opts: KernelOptions;
  readonly log: pino.Logger;
  readonly post: PostOffice;
  readonly events: EventBus;
  readonly logs: AgentLogs;
  readonly supervisor: Supervisor;
  store!: StateStore;
  sandbox!: SandboxRuntime;
  readonly plain = new PlainSpawner();
  readonly agentSocketPath: string;
  /** Rights of every live principal (agents across restarts, connections while open). */
  readonly perms = new Map<number, Permissions>();
  /** Live non-agent connections by id. */
  readonly clients = new Map<number, Connection>();
  readonly connections = new Set<Connection>();
  private servers: net.Server[] = [];
  private nextId = 1;
  private python: string | null = null;
  private closing: Promise<void> | null = null;
  readonly startedAt = Date.now();

  constructor(options: Partial<KernelOptions> = {}) {
    this.opts = defaultOptions(options);
    this.log = pino(
      { level: this.opts.logLevel, base: { svc: 'clove' } },
      pino.destination({ dest: 2, sync: true }),
    );
    this.agentSocketPath = path.join(this.opts.dataDir, 'run', 'agent.sock');
    this.post = new PostOffice(this.opts.mailboxSize);
    this.events = new EventBus(this.opts.eventQueueSize);
    this.logs = new AgentLogs({
      dir: path.join(this.opts.dataDir, 'logs'),
      maxBytes: this.opts.logMaxBytes,
      keep: this.opts.logKeep,
      checkIntervalMs: this.opts.logCheckIntervalMs,
    });
    this.supervisor = new Supervisor(this.logs, {
      event: (type, data, source) => this.publish(type as KernelEventType, data, source),
      release: (a) => this.releaseAgent(a),
      exited: (a) => this.dropConnectionsOf(a.def.id),
      log: (level, msg, fields) => this.log[level](fields ?? {}, msg),
    });
  }

  private counters = new Map<number, { syscalls: number; sent: number; received: number }>();

  /** Per-principal counters for METRICS_AGENT's kernel_stats. */
  stats(id: number): { syscalls: number; sent: number; received: number } {
    let s = this.counters.get(id);
    if (!s) {
      s = { syscalls: 0, sent: 0, received: 0 };
      this.counters.set(id, s);
    }
    return s;
  }

  allocateId(): number {
    return this.nextId++;
  }

  publish(type: KernelEventType, data: Record<string, unknown>, source: number): number {
    return this.events.publish(type, data, source);
  }

  /**
   * An agent's own work directory (its default cwd), `<data-dir>/work/<name>`: kept across restarts,
   * owned by the uid the agent runs as.
   */
  workDir(name: string, id: number): string {
    const dir = path.join(this.opts.dataDir, 'work', name);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    const uid = this.sandbox.agentUid(id);
    if (uid !== null) fs.chownSync(dir, uid.uid, uid.gid);
    return dir;
  }

  /** The real python3 interpreter, resolved once at start (the pyenv shim on PATH costs ~35 ms per start). */
  pythonInterpreter(): string {
    if (!this.python) throw new SpawnError('no python3 interpreter found on PATH (set CLOVE_PYTHON)');
    return this.python;
  }

  async start(): Promise<void> {
    const o = this.opts;
    fs.mkdirSync(o.dataDir, { recursive: true, mode: 0o711 });
    fs.mkdirSync(path.join(o.dataDir, 'work'), { recursive: true, mode: 0o711 });
    fs.mkdirSync(path.dirname(this.agentSocketPath), { recursive: true, mode: 0o711 });
    fs.chmodSync(path.dirname(this.agentSocketPath), 0o711);
    await claimSocketPath(o.socketPath);
    await claimSocketPath(this.agentSocketPath);
    this.python = await resolvePython();
    this.store = new StateStore({ path: path.join(o.dataDir, 'state.db'), durability: o.durability });
    this.sandbox = await loadSandbox(o.sandbox, this.log, o.agentUidBase);
    // The operator socket comes last: once it accepts, the kernel is completely up (readiness signal).
    this.servers.push(await this.listen(this.agentSocketPath, 0o666, 'agent'));
    this.servers.push(await this.listen(o.socketPath, 0o600, 'operator'));
    this.log.info(
      {
        socket: o.socketPath,
        agent_socket: this.agentSocketPath,
        data_dir: o.dataDir,
        sandbox: this.sandbox.summary,
      },
      'clove kernel ready',
    );
  }

  private listen(file: string, mode: number, kind: 'operator' | 'agent'): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ pauseOnConnect: true }, (sock) => void this.accept(sock, kind));
      server.maxConnections = 65536;
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new KernelStartError(`cannot listen on ${file}: ${e.code ?? e.message}`, 3)),
      );
      // The socket file is created with the umask; narrow it before anybody can connect.
      const old = process.umask(0o177);
      server.listen(file, () => {
        process.umask(old);
        fs.chmodSync(file, mode);
        server.on('error', (e) => this.log.error({ err: e }, 'listener error'));
        resolve(server);
      });
    });
  }

  /** Decides who a new connection is (docs/protocol.md §2) and starts serving it. */
  private async accept(sock: net.Socket, kind: 'operator' | 'agent'): Promise<void> {
    let principal: Principal | null;
    try {
      principal = await this.identify(sock, kind);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'cannot identify connection');
      principal = null;
    }
    if (!principal || this.closing) {
      this.log.debug({ kind, closing: Boolean(this.closing) }, 'connection refused');
      sock.destroy();
      return;
    }
    const conn = new Connection(sock, principal, this, this.opts.maxPayload);
    this.connections.add(conn);
    if (principal.role !== 'agent') {
      this.clients.set(principal.id, conn);
      this.perms.set(principal.id, preset(principal.role === 'operator' ? 'unrestricted' : 'standard'));
    }
    sock.resume();
  }

  private async identify(sock: net.Socket, kind: 'operator' | 'agent'): Promise<Principal | null> {
    const cred = this.sandbox.peerCredentials(sock);
    let agent = this.agentOfPid(cred.pid);
    if (!agent) {
      // A child can connect before the spawn that made it has been recorded: let spawns settle.
      await this.supervisor.spawnsSettled();
      agent = this.agentOfPid(cred.pid);
    }
    if (agent) return { id: agent.def.id, role: 'agent', name: agent.def.name };
    if (kind === 'agent') {
      this.log.warn({ pid: cred.pid, uid: cred.uid }, 'refused a non-agent connection on the agent socket');
      return null;
    }
    const owner = process.getuid?.() ?? 0;
    const id = this.allocateId();
    if (cred.uid === owner || cred.uid === 0) return { id, role: 'operator', name: `operator-${id}` };
    return { id, role: 'client', name: `client-${id}` };
  }

  /** The agent a pid belongs to: by the sandbox's cgroup, else by its parent chain in /proc. */
  agentOfPid(pid: number): AgentRecord | undefined {
    if (pid <= 0) return undefined;
    const viaSandbox = this.sandbox.ownerOf(pid);
    if (viaSandbox !== undefined) return this.supervisor.get(viaSandbox);
    let p = pid;
    for (let depth = 0; depth < 64 && p > 1; depth++) {
      const a = this.supervisor.pidOwner(p);
      if (a) return a;
      const next = parentPid(p);
      if (next === null || next === process.pid) return undefined;
      p = next;
    }
    return undefined;
  }

  dispatch(conn: Connection, frame: Frame): Reply | Promise<Reply> {
    const principal = conn.principal;
    if (principal.role === 'agent') {
      this.supervisor.heartbeat(principal.id);
      this.stats(principal.id).syscalls++;
    }
    const h: Handler | undefined = handlers.get(frame.opcode);
    if (!h) return errorReply(handlers.unknown(frame.opcode));
    const caller: Caller = { conn, principal, perms: this.perms.get(principal.id) ?? preset('minimal') };
    try {
      const payload = h.raw ? frame.payload : parseObject(frame.payload);
      const r = h.fn(this, caller, payload as never);
      if (r instanceof Promise) return r.catch((e) => this.fail(frame.opcode, caller, e));
      return r;
    } catch (e) {
      return this.fail(frame.opcode, caller, e);
    }
  }

  private fail(op: number, caller: Caller, e: unknown): Reply {
    const reply = errorReply(e);
    if (reply.code === 'internal')
      this.log.error({ err: e, op: opName(op), caller: caller.principal.id }, 'syscall failed');
    return reply;
  }

  badFrame(conn: Connection, message: string): void {
    this.log.warn(
      { conn: conn.principal.id, role: conn.principal.role, error: message },
      'bad frame: closing the connection',
    );
  }

  closed(conn: Connection): void {
    this.connections.delete(conn);
    const p = conn.principal;
    // What this connection took under a lease and never acknowledged goes back to the mailbox: its
    // process died (or hung up) before it could process it.
    this.post.requeueLeases(p.id, conn);
    if (p.role === 'agent') return;
    this.clients.delete(p.id);
    this.perms.delete(p.id);
    this.counters.delete(p.id);
    this.post.release(p.id);
    this.events.drop(p.id);
  }

  /**
   * Closes every connection of an agent whose process tree just died. Their sockets may not have
   * reported EOF yet; a RECV parked on one must not take a message for a reader that is gone.
   */
  private dropConnectionsOf(id: number): void {
    for (const c of this.connections) if (c.principal.id === id) c.close();
  }

  /** Forgets an agent that is gone for good: names, mailbox, subscriptions, rights. */
  private releaseAgent(a: AgentRecord): void {
    const id = a.def.id;
    this.post.release(id);
    this.events.drop(id);
    this.perms.delete(id);
    this.counters.delete(id);
  }

  /** Stops accepting, stops every agent gracefully, closes clients and removes the socket files. */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    for (const s of this.servers) s.close();
    await this.supervisor.shutdown(this.opts.shutdownGraceMs);
    for (const c of this.connections) c.close();
    for (const f of [this.opts.socketPath, this.agentSocketPath]) fs.rmSync(f, { force: true });
    this.store?.close();
    this.logs.close();
    await this.sandbox?.close();
    this.log.info('clove kernel stopped');
  }
}

/** Asks python3 for its real executable once, off the event loop; null when there is none. */
function resolvePython(): Promise<string | null> {
  if (process.env.CLOVE_PYTHON) return Promise.resolve(process.env.CLOVE_PYTHON);
  return new Promise((resolve) =>
    execFile(
      'python3',
      ['-c', 'import sys; print(sys.executable)'],
      { encoding: 'utf8', timeout: 10_000 },
      (err, out) => resolve(err ? null : out.trim() || null),
    ),
  );
}

function parentPid(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may hold spaces and parentheses: the fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(rest[1]);
    return Number.isInteger(ppid) ? ppid : null;
  } catch {
    return null;
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
