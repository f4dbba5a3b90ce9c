/**
 * Who is on the other end of a connection (docs/protocol.md §2), and what each live principal holds in
 * the core: its id, its rights and its counters. One id space for agents and connections, assigned from
 * 1 upwards and never reused while the kernel runs.
 */
import { levelOf, parsePermissions, preset, within, type Permissions } from '../perms/permissions.js';
import { operatorBudgets, type Budgets } from './budgets.js';

export type Role = 'agent' | 'operator' | 'client';

export interface Principal {
  id: number;
  role: Role;
  /** The agent's name, or a label for a non-agent connection. */
  name: string;
  /**
   * Agents only: the agent's persistent identity `<name>#<serial>` (docs/protocol.md §2), the same across
   * its restarts and the kernel's, never the same for two agents that held the name one after the other.
   */
  identity?: string;
  /** The peer's pid when the connection was identified (SO_PEERCRED); absent for calls without a socket. */
  pid?: number;
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface Stats {
  syscalls: number;
  sent: number;
  received: number;
  /** Bytes HTTP calls made for this principal sent and received on their sockets (the http family). */
  httpBytes: number;
  /** Bytes READ returned to this principal and WRITE wrote for it (the files family). */
  bytesRead: number;
  bytesWritten: number;
}

/** Which socket a connection came in on: the operator socket (0600) or the agents' socket. */
export type Door = 'operator' | 'agent';

export interface AgentLookup {
  /** The agent a peer pid belongs to (its process tree), if any. */
  agentOfPid(pid: number): { id: number; name: string; identity: string } | undefined;
  /** Resolves once spawns under way have settled (a child may connect before its spawn is recorded). */
  spawnsSettled(): Promise<void>;
}

export class Principals {
  private nextId = 1;
  private readonly perms = new Map<number, Permissions>();
  private readonly counters = new Map<number, Stats>();
  private readonly clients = new Set<number>();
  private readonly bounds = new Map<number, Budgets>();
  private readonly watchers: ((id: number) => void)[] = [];
  private readonly clientWatchers: ((id: number, open: boolean) => void)[] = [];

  constructor(
    private readonly agents: AgentLookup,
    /** The uid that owns the kernel: it and root are operators. */
    private readonly ownerUid: number,
    /** Budgets of agents and clients that were given none of their own. */
    readonly defaultBudgets: Budgets,
  ) {
    this.operator = operatorBudgets(defaultBudgets);
  }

  private readonly operator: Budgets;

  /** A cluster's allocator (ids unique cluster-wide, docs/cluster.md); absent: 1, 2, 3… */
  private allocator?: () => number;

  allocate(): number {
    return this.allocator ? this.allocator() : this.nextId++;
  }

  /**
   * Ids up to `id` are taken (agents a previous kernel on this data dir ran, which keep theirs when they
   * are re-adopted or restored): `allocate` never hands them out.
   */
  reserve(id: number): void {
    if (Number.isSafeInteger(id) && id >= this.nextId) this.nextId = id + 1;
  }

  /** From now on ids come from `fn` (a clustered kernel: the directory's slots). */
  useAllocator(fn: () => number): void {
    this.allocator = fn;
  }

  /**
   * Decides who a new connection is: a process of a spawned agent is that agent (on either socket);
   * anybody else is an operator (kernel owner or root, operator socket) or a client; the agents' socket
   * refuses non-agents (null).
   */
  async identify(cred: PeerCred, door: Door): Promise<Principal | null> {
    let agent = this.agents.agentOfPid(cred.pid);
    if (!agent) {
      await this.agents.spawnsSettled();
      agent = this.agents.agentOfPid(cred.pid);
    }
    if (agent)
      return { id: agent.id, role: 'agent', name: agent.name, identity: agent.identity, pid: cred.pid };
    if (door === 'agent') return null;
    const id = this.allocate();
    if (cred.uid === this.ownerUid || cred.uid === 0) return { id, role: 'operator', name: `operator-${id}` };
    return { id, role: 'client', name: `client-${id}` };
  }

  /** A non-agent connection opened: operators may do anything, clients get `standard` rights. */
  clientOpened(p: Principal): void {
    if (p.role === 'agent') return;
    this.clients.add(p.id);
    this.perms.set(p.id, preset(p.role === 'operator' ? 'unrestricted' : 'standard'));
    this.bounds.set(p.id, p.role === 'operator' ? this.operator : this.defaultBudgets);
    for (const w of this.clientWatchers) w(p.id, true);
  }

  /** Calls `fn` when a non-agent connection opens, and when it is forgotten (the fast path's reachability). */
  watchClients(fn: (id: number, open: boolean) => void): void {
    this.clientWatchers.push(fn);
  }

  /** The budgets of a principal: its own (agents, clients), or an operator's (unlimited in what it does). */
  budgets(id: number): Budgets {
    return this.bounds.get(id) ?? this.defaultBudgets;
  }

  setBudgets(id: number, b: Budgets): void {
    this.bounds.set(id, b);
    this.changed(id);
  }

  /** A live non-agent connection (clients are addressed by their connection's id). */
  isClient(id: number): boolean {
    return this.clients.has(id);
  }

  rights(id: number): Permissions | undefined {
    return this.perms.get(id);
  }

  hasRights(id: number): boolean {
    return this.perms.has(id);
  }

  setRights(id: number, p: Permissions): void {
    this.perms.set(id, p);
    this.changed(id);
  }

  /** Calls `fn` whenever a principal's rights or budgets are set (the agents service persists them). */
  watch(fn: (id: number) => void): void {
    this.watchers.push(fn);
  }

  private changed(id: number): void {
    for (const w of this.watchers) w(id);
  }

  /** Rights from a `permissions` object or a level name (SPAWN, SET_PERMS). */
  parseRights(v: unknown): Permissions {
    return parsePermissions(v);
  }

  /** The preset a set of rights is, or `custom` (GET_PERMS `level`). */
  levelOf(p: Permissions): string {
    return levelOf(p);
  }

  /** True when `child` grants nothing `parent` does not (nobody hands out a right they lack). */
  within(child: Permissions, parent: Permissions): boolean {
    return within(child, parent);
  }

  /** Per-principal counters (METRICS_AGENT's kernel_stats). */
  stats(id: number): Stats {
    let s = this.counters.get(id);
    if (!s) {
      s = { syscalls: 0, sent: 0, received: 0, httpBytes: 0, bytesRead: 0, bytesWritten: 0 };
      this.counters.set(id, s);
    }
    return s;
  }

  /** Forgets a principal that is gone for good (a closed client, a released agent). */
  forget(id: number): void {
    if (this.clients.delete(id)) for (const w of this.clientWatchers) w(id, false);
    this.perms.delete(id);
    this.bounds.delete(id);
    this.counters.delete(id);
  }
}
