/**
 * One `clove mcp` process's way into the kernel (docs/mcp.md). Two principals, never the operator's
 * rights for what the MCP client asks to be done:
 *
 * - the **session agent** (session-agent.ts), spawned here with the operator's policy as its rights
 *   and quotas: every call that acts — spawn, kill, restart, send, exec, read, write, http, think,
 *   store, fetch, the kernel's MCP tools — is a syscall it makes, checked, counted and audited as its;
 * - this process's **operator connection**, used only to spawn and stop the session agent, to talk to
 *   it, to read agents' log files (LIST gives their paths to operators only) and the event stream —
 *   limited to the session agent and the agents it spawned unless the operator chose `scope: all`,
 *   which also makes list, kill and restart reach every agent (never spawn or a guarded syscall).
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { AgentInfo, KernelEvent, OpName } from '../../protocol/index.js';
import { CloveClient, kernelError, type KernelError } from '../../sdk/typescript/client.js';

/** Where the session agent's program is (compiled next to this file). */
export const SESSION_AGENT = fileURLToPath(new URL('./session-agent.js', import.meta.url));

export type Scope = 'own' | 'all';

export interface SessionOptions {
  socket: string;
  /** The session agent's name (`mcp-<pid>` by default). */
  name: string;
  /** Its rights: a level name or a permissions object (SPAWN `permissions`). */
  permissions: unknown;
  /** Its quotas (SPAWN `quotas`), if any. */
  quotas?: Record<string, unknown>;
  scope: Scope;
  /** How long one relayed call may take before the session gives up on it. */
  callTimeoutMs?: number;
  /** Where notes for the operator go (stderr: stdout is the MCP channel). */
  note(msg: string): void;
}

/** Events kept for `recent_events`. */
const EVENT_RING = 1000;
/** The owner's keepalive to the session agent. */
const PING_MS = 10_000;
const DEFAULT_CALL_TIMEOUT_MS = 330_000;

interface Pending {
  resolve(r: Record<string, unknown>): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/** A reply of the kernel: `success: false` ones become the SDK's error of their code. */
function checked<T>(r: Record<string, unknown>): T {
  if (r && r.success === false) throw kernelError(r);
  return r as T;
}

export class Session {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly events: KernelEvent[] = [];
  private ping: NodeJS.Timeout | undefined;
  private closed = false;
  /** Why the session agent is gone for good, once it is (killed by an operator, escalated). */
  private gone: string | undefined;
  /** Resolves when the operator connection drops (the kernel went away). */
  readonly lost: Promise<Error>;
  private markLost!: (e: Error) => void;

  private constructor(
    private readonly o: SessionOptions,
    private readonly op: CloveClient,
    private readonly ev: CloveClient,
    readonly agentId: number,
    readonly agentName: string,
    /** The kernel's data dir (HELLO), where `mcp-token` lives by default. */
    readonly dataDir: string | undefined,
  ) {
    this.lost = new Promise((r) => (this.markLost = r));
  }

  get scope(): Scope {
    return this.o.scope;
  }

  /**
   * Connects as the operator, spawns the session agent with the policy's rights and waits until it
   * answers. Throws the kernel's error when the spawn is refused (a bad policy, a name in use).
   */
  static async open(o: SessionOptions): Promise<Session> {
    const op = await CloveClient.connect({ socketPath: o.socket, reconnect: false });
    const ev = await CloveClient.connect({ socketPath: o.socket, reconnect: false }).catch((e: unknown) => {
      op.close();
      throw e;
    });
    let s: Session | undefined;
    try {
      const hello = await op.hello();
      if (hello.role !== 'operator')
        throw new Error(`clove mcp must run as the kernel's operator (this connection is a ${hello.role})`);
      const spawned = await op.spawn({
        name: o.name,
        script: SESSION_AGENT,
        permissions: o.permissions as Record<string, unknown>,
        ...(o.quotas ? { quotas: o.quotas as never } : {}),
        restart_policy: 'on-failure',
        env: { MCP_SESSION_OWNER: String(op.agentId) },
        labels: { 'clove.mcp': 'session' },
      });
      s = new Session(o, op, ev, spawned.id, spawned.name, hello.data_dir ?? undefined);
      s.start();
      await s.relay('@ping', {}, 20_000).catch(async (e: unknown) => {
        const log = (await op.list()).find((a) => a.id === spawned.id)?.log_file;
        const tail = log && fs.existsSync(log) ? fs.readFileSync(log, 'utf8').slice(-1000).trim() : '';
        throw new Error(
          `the session agent ${spawned.name} did not start: ${(e as Error).message}${tail ? `; its log: ${tail}` : ''}`,
        );
      });
      await ev.subscribe(['*']);
      s.follow();
      return s;
    } catch (e) {
      if (s) await s.close();
      else {
        op.close();
        ev.close();
      }
      throw e;
    }
  }

  /** Takes the session agent's replies as the kernel pushes them; pings it; notices a lost kernel. */
  private start(): void {
    const drop = (e: Error) => {
      if (this.closed) return;
      this.closed = true;
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(e);
      }
      this.pending.clear();
      clearInterval(this.ping);
      this.markLost(e);
    };
    void (async () => {
      for await (const m of this.op.messages()) {
        const body = m.message as { clove_mcp?: string; id?: number; reply?: Record<string, unknown> } | null;
        if (m.from !== this.agentId || body?.clove_mcp !== 'reply' || typeof body.id !== 'number') continue;
        const p = this.pending.get(body.id);
        if (!p) continue;
        this.pending.delete(body.id);
        clearTimeout(p.timer);
        p.resolve(body.reply ?? {});
      }
      drop(new Error('the connection to the kernel closed'));
    })().catch((e: unknown) => drop(e as Error));
    this.ping = setInterval(() => {
      this.op.send(this.agentId, { clove_mcp: 'ping' }).catch(() => {});
    }, PING_MS);
    this.ping.unref();
  }

  /**
   * Keeps the newest events of the kernel for `recent_events`, and watches the session agent: when its
   * process ends, the calls it was making are answered at once (it will not), and when it is gone for
   * good (killed, not restarted) every later call says so instead of waiting.
   */
  private follow(): void {
    void (async () => {
      for await (const e of this.ev.events()) {
        this.events.push(e);
        if (this.events.length > EVENT_RING) this.events.splice(0, this.events.length - EVENT_RING);
        if (e.data?.agent_id !== this.agentId) continue;
        if (e.type === 'AGENT_EXITED') {
          const why = `the session agent ${this.agentName} exited (${String(e.data.reason ?? e.data.exit_code)})`;
          for (const p of this.pending.values()) {
            clearTimeout(p.timer);
            p.reject(new Error(why));
          }
          this.pending.clear();
          // Restarted (on-failure) or not: LIST says whether it is still there.
          const row = (await this.op.list().catch(() => [])).find((a) => a.id === this.agentId);
          if (!row || row.state === 'STOPPED' || row.state === 'FAILED') this.gone = why;
        } else if (e.type === 'AGENT_SPAWNED') this.gone = undefined;
      }
    })().catch(() => {});
  }

  /**
   * Asks the session agent to make `op` with `args` as itself; resolves with the kernel's reply as it is
   * (`success: false` included), rejects when the agent does not answer in time.
   */
  relay(
    op: OpName | '@ping' | '@inbox',
    args: Record<string, unknown>,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(new Error('the MCP session is closed'));
    if (this.gone) return Promise.reject(new Error(`${this.gone}: restart clove mcp`));
    const id = this.nextId++;
    const ms = timeoutMs ?? this.o.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`the session agent ${this.agentName} did not answer ${op} within ${ms} ms`));
      }, ms);
      this.pending.set(id, { resolve, reject, timer });
      this.op.send(this.agentId, { clove_mcp: 'call', id, op, args }).catch((e: unknown) => {
        clearTimeout(timer);
        this.pending.delete(id);
        // Nobody to send to: the session agent was killed (or its identity ended).
        if ((e as KernelError).code === 'not_found')
          this.gone ??= `the session agent ${this.agentName} is gone (killed by an operator?)`;
        reject(this.gone ? new Error(`${this.gone}: restart clove mcp`) : (e as Error));
      });
    });
  }

  /** `relay`, with an error reply thrown as the SDK's KernelError of its code. */
  async act<T = Record<string, unknown>>(
    op: OpName,
    args: Record<string, unknown>,
    timeoutMs?: number,
  ): Promise<T> {
    return checked<T>(await this.relay(op, args, timeoutMs));
  }

  /** The agents the MCP client may see: the session agent and those it spawned, or (scope all) every one. */
  async agents(): Promise<AgentInfo[]> {
    const all = await this.op.list();
    if (this.o.scope === 'all') return all;
    const mine = await this.act<AgentInfo[]>('LIST', {});
    const ids = new Set(mine.map((a) => a.id));
    return all.filter((a) => ids.has(a.id));
  }

  /** An agent the MCP client may see, by id or name; not_found (as the kernel says it) otherwise. */
  async agent(ref: string | number): Promise<AgentInfo> {
    const list = await this.agents();
    const a = list.find((x) =>
      typeof ref === 'number' ? x.id === ref : x.name === ref || String(x.id) === ref,
    );
    if (!a)
      throw kernelError({
        success: false,
        code: 'not_found',
        error: `agent not found: ${ref}${this.o.scope === 'own' ? ' (this MCP session sees only its own agents)' : ''}`,
      });
    return a;
  }

  /** KILL or RESTART: as the session agent (its own agents), or as the operator with scope all. */
  async lifecycle(op: 'KILL' | 'RESTART', ref: string | number, graceMs?: number): Promise<unknown> {
    const target = typeof ref === 'number' || /^\d+$/.test(ref) ? { id: Number(ref) } : { name: ref };
    const args = { ...target, ...(graceMs !== undefined ? { grace_ms: graceMs } : {}) };
    if (this.o.scope === 'all') {
      if (target.id === this.agentId || target.name === this.agentName)
        throw kernelError({
          success: false,
          code: 'permission_denied',
          error: 'the MCP session cannot stop its own agent',
        });
      const t = target.id ?? target.name!;
      const opts = graceMs !== undefined ? { grace_ms: graceMs } : {};
      return op === 'KILL' ? this.op.kill(t, opts) : this.op.restart(t, opts);
    }
    return this.act(op, args);
  }

  /** The newest events the MCP client may see (scope own: about its agents), oldest first. */
  async recentEvents(o: { limit: number; type?: string; agent?: string | number }): Promise<KernelEvent[]> {
    let visible: Set<number> | undefined;
    if (this.o.scope === 'own' || o.agent !== undefined) {
      const list = o.agent !== undefined ? [await this.agent(o.agent)] : await this.agents();
      visible = new Set(list.map((a) => a.id));
    }
    const about = (e: KernelEvent): boolean => {
      if (!visible) return true;
      const id = e.data?.agent_id;
      return visible.has(e.source_agent_id) || (typeof id === 'number' && visible.has(id));
    };
    return this.events.filter((e) => (!o.type || e.type === o.type) && about(e)).slice(-o.limit);
  }

  /** The last `lines` lines of a visible agent's log file (read by this process, the operator). */
  async logs(
    ref: string | number,
    lines: number,
  ): Promise<{ agent_id: number; name: string; lines: string[] }> {
    const a = await this.agent(ref);
    const withFile = (await this.op.list()).find((x) => x.id === a.id);
    const file = withFile?.log_file;
    let text = '';
    if (file) {
      try {
        // The tail only: a log may be large. 64 KiB per 100 lines is plenty for agents' lines.
        const fd = fs.openSync(file, 'r');
        try {
          const size = fs.fstatSync(fd).size;
          const want = Math.min(size, Math.max(64 * 1024, lines * 1024));
          const buf = Buffer.alloc(want);
          fs.readSync(fd, buf, 0, want, size - want);
          text = buf.toString('utf8');
        } finally {
          fs.closeSync(fd);
        }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    const all = text.split('\n');
    if (all.at(-1) === '') all.pop();
    return { agent_id: a.id, name: a.name, lines: all.slice(-lines) };
  }

  /** Stops the session agent and closes both connections. */
  async close(): Promise<void> {
    clearInterval(this.ping);
    if (!this.closed) {
      this.closed = true;
      await this.op.kill(this.agentId, { wait: true, grace_ms: 2000 }).catch(() => {});
    }
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error('the MCP session closed'));
    }
    this.pending.clear();
    this.op.close();
    this.ev.close();
  }
}
