/**
 * The kernel's cluster service (docs/cluster.md): wires the directory (etcd) and the bus (NATS JetStream)
 * into the kernel's names, ids, mail, events and agents. Built by kernel.ts only when `--cluster` is
 * given, through a dynamic import, so that a kernel on its own never loads etcd3 or nats; the engines
 * are created by `createEngines` (or handed in by a test).
 *
 * What it does:
 * - ids: Principals allocates from the directory's slots (unique cluster-wide);
 * - names: an agent's name (SPAWN, a restore, a takeover) and a REGISTERed name are claimed in etcd before
 *   they are registered locally; this node then consumes the name's mail on the bus (`bus.own`) and puts
 *   it in the local mailbox; the claim is given back when the name is;
 * - mail: SEND to `name@node`, to a name another node owns or to another node's agent id goes through the
 *   bus; BROADCAST also reaches the other nodes' named agents;
 * - events: every local event is published on the bus, every other node's published locally with `node`;
 * - node loss: the definitions of a lost node's restartable agents are taken over by the survivor chosen
 *   by placement, which spawns them under the same names (their waiting mail follows the name);
 * - lease loss (a partition): the agents whose names this node owned are stopped, then the node rejoins
 *   and starts again the restartable ones no survivor took over meanwhile.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AgentInfo, ClusterNode, SpawnArgs } from '../../protocol/index.js';
import type { AgentService, ClusterNames } from '../agents/agents.js';
import type { Caller } from '../core/context.js';
import {
  ClusterUnavailableError,
  InvalidStateError,
  KernelError,
  NotFoundError,
  MailboxFullError,
  NameTakenError,
  PermissionDeniedError,
  QuotaExceededError,
  TooLargeError,
} from '../core/errors.js';
import type { Principals } from '../core/principals.js';
import type { EventBus, KernelEventType } from '../events/bus.js';
import { reachableState, type Mail } from '../ipc/mailboxes.js';
import { preset } from '../perms/permissions.js';
import type { AgentRecord } from '../supervisor/supervisor.js';
import type {
  ClusterAgentDef,
  ClusterBus,
  ClusterDirectory,
  ClusterOptions,
  DirectoryEvent,
  NameOwner,
  NodeInfo,
  RemoteBroadcast,
  RemoteEvent,
  RemoteMessage,
} from './types.js';

export interface ClusterEngines {
  directory: ClusterDirectory;
  bus: ClusterBus;
}

export interface ClusterDeps {
  mail: Mail;
  events: EventBus;
  agents: AgentService;
  principals: Principals;
  log: Logger;
  version: string;
}

/** What is stored in etcd for an agent that must outlive its node (ClusterAgentDef.spec). */
interface DefSpec {
  v: 1;
  /** The SPAWN request as this node ran it (validated, defaults filled, script absolute, rights explicit). */
  request: SpawnArgs;
}

/** The caller a takeover spawns as: the kernel itself, with an operator's rights. */
const KERNEL_CALLER: Caller = { id: 0, role: 'operator', name: 'cluster', perms: preset('unrestricted') };

/** How often this node's NodeInfo (free memory, idle CPU, agents) is refreshed in etcd. */
const PUBLISH_EVERY_MS = 5000;

/** Ids below this are in slot 0, which the directory never gives out (docs/cluster.md "Ids"). */
const SLOT_0_END = 2 ** 20;

/** How long a rejoined node waits for an agent it stopped to be gone before starting it again. */
const STOPPED_WAIT_MS = 30_000;

/** How long LIST `all_nodes` waits for another node's answer. */
const LIST_TIMEOUT_MS = 5000;

/** Builds the real engines (etcd, NATS JetStream): imported here, only for a clustered kernel. */
export async function createEngines(
  o: ClusterOptions,
  deps: { log: Logger; version: string },
): Promise<ClusterEngines> {
  // One after the other: Node 20 importing both at once (etcd3's and nats's CommonJS graphs loading
  // concurrently) sometimes saw nats half-initialised ("JSONCodec is not a function").
  const dir = await import('./directory.js');
  const bus = await import('./bus.js');
  return {
    directory: new dir.EtcdDirectory(o, { log: deps.log, version: deps.version }),
    bus: new bus.JetStreamBus(o, { log: deps.log }),
  };
}

/**
 * A failure of the directory or the bus as the wire says it (docs/cluster.md): their errors carry a
 * `code`; what the cluster could not do is cluster_unavailable, mail over the stream's limits is
 * mailbox_full, a message NATS cannot carry too_large.
 */
export function wireError(e: unknown, what: string): Error {
  if (e instanceof KernelError) return e;
  const code = (e as { code?: unknown })?.code;
  const msg = (e as Error)?.message ?? String(e);
  if (code === 'mail_rejected') return new MailboxFullError(`${what}: ${msg}`, { delivered_to: 0 });
  if (code === 'mail_too_large') return new TooLargeError(`${what}: ${msg}`, { delivered_to: 0 });
  // Another kernel's refusal (a call it served): the same condition here.
  const remote = (e as { remoteMessage?: unknown })?.remoteMessage;
  if (typeof remote === 'string') {
    const text = `${what}: ${remote}`;
    if (code === 'not_found') return new NotFoundError(text);
    if (code === 'permission_denied') return new PermissionDeniedError(text);
    if (code === 'invalid_state') return new InvalidStateError(text);
  }
  if (typeof code === 'string') return new ClusterUnavailableError(`${what}: ${msg}`, { delivered_to: 0 });
  return e instanceof Error ? e : new Error(msg);
}

export class ClusterService implements ClusterNames {
  readonly node: string;
  private readonly directory: ClusterDirectory;
  private readonly bus: ClusterBus;
  /** Cluster-wide names this node owns, and the local id holding each. */
  private readonly owned = new Map<string, number>();
  /** Claims under way, by name: a second local claimant is refused at once. */
  private readonly claiming = new Map<string, number>();
  /** Releases under way, by name: a claim of the same name waits for it (else it could undo the claim). */
  private readonly releasing = new Map<string, Promise<void>>();
  /** Names whose definition this node stored (restartable agents spawned here). */
  private readonly defs = new Set<string>();
  /** Agents stopped because the node lost its lease: their definitions are someone else's now. */
  private readonly demoted = new Set<number>();
  /** Nodes this kernel saw lost, with what they last published (CLUSTER_NODES `alive: false`). */
  private readonly lost = new Map<string, NodeInfo>();
  private readonly known = new Map<string, NodeInfo>();
  private readonly unsubscribe: (() => void)[] = [];
  /** Kernel-to-kernel calls served by other parts of the kernel (`handle`): the router's forwarded calls. */
  private readonly extraCalls = new Map<string, (args: unknown, from: string) => Promise<unknown>>();
  private timer?: NodeJS.Timeout;
  private closing = false;
  private readonly startedAt = Date.now();
  private localId = 0;

  constructor(
    readonly opts: ClusterOptions,
    engines: ClusterEngines,
    private readonly d: ClusterDeps,
  ) {
    this.node = opts.node;
    this.directory = engines.directory;
    this.bus = engines.bus;
  }

  /** Joins: the directory (lease, id slot, NodeInfo), the bus, then the kernel's hooks. */
  async start(): Promise<void> {
    await this.directory.start();
    try {
      await this.bus.start();
    } catch (e) {
      await this.directory.close().catch(() => undefined);
      throw e;
    }
    this.d.principals.useAllocator(() => this.allocateId());
    for (const n of this.directory.nodes()) this.known.set(n.node, n);
    this.unsubscribe.push(this.directory.on((e) => this.directoryEvent(e)));
    this.unsubscribe.push(this.d.events.tap((type, data, source) => this.localEvent(type, data, source)));
    this.unsubscribe.push(this.bus.onEvent((e) => this.remoteEvent(e)));
    this.unsubscribe.push(this.bus.onBroadcast((m) => this.remoteBroadcast(m)));
    this.bus.serve((method, args, from) => this.serve(method, args, from));
    await this.publishInfo();
    this.timer = setInterval(() => void this.publishInfo(), PUBLISH_EVERY_MS);
    this.timer.unref();
    this.d.log.info(
      { node: this.node, advertise: this.opts.advertise, nodes: this.directory.nodes().length },
      'joined the cluster',
    );
  }

  /**
   * An id from this node's slots; while the directory cannot give one (the lease is lost) an id of slot 0,
   * which no node's slots hold, so that operators can still connect (such an id is unique on this node
   * only; nothing cluster-wide is claimed while the lease is lost anyway).
   */
  private allocateId(): number {
    try {
      return this.directory.allocateId();
    } catch (e) {
      this.d.log.warn({ err: (e as Error).message }, 'no cluster id: a local one is used');
      this.localId = (this.localId % (SLOT_0_END - 1)) + 1;
      return this.localId;
    }
  }

  /** The kernel began stopping: lost nodes are no longer taken over here, definitions stay. */
  beginClose(): void {
    this.closing = true;
  }

  /** Leaves: the lease is revoked (this node's names go at once), the bus closes. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    for (const u of this.unsubscribe.splice(0)) u();
    await Promise.allSettled([this.bus.close(), this.directory.close()]);
  }

  // ---- names -------------------------------------------------------------------------------------------

  /**
   * Claims `name` cluster-wide for local id `id`, then consumes its mail here. Throws NameTakenError with
   * `conflict` (the text a local conflict gives) when another node, or another local id, holds it.
   */
  async claim(name: string, id: number, identity: string, conflict?: string): Promise<void> {
    const text = conflict ?? `name already in use: ${name}`;
    if (this.owned.get(name) === id) return;
    // Another local principal holding or claiming it is a local conflict: etcd is not asked (the
    // directory lets this node move its own claim to another id).
    const pending = this.claiming.get(name);
    const held = this.owned.get(name);
    if (pending !== undefined && pending !== id)
      throw new NameTakenError(text, { agent_id: pending, node: this.node });
    if (held !== undefined && held !== id && this.d.mail.resolve(name) === held)
      throw new NameTakenError(text, { agent_id: held, node: this.node });
    this.claiming.set(name, id);
    let owner: NameOwner;
    try {
      await this.releasing.get(name);
      owner = await this.directory.claim({ name, id, identity });
    } catch (e) {
      throw wireError(e, `cannot claim the name ${name} in the cluster`);
    } finally {
      if (this.claiming.get(name) === id) this.claiming.delete(name);
    }
    if (owner.node !== this.node || owner.id !== id)
      throw new NameTakenError(text, { agent_id: owner.id, node: owner.node });
    this.owned.set(name, id);
    // Bound in the background (the bus keeps trying while NATS is away): mail waits in the stream.
    this.bus
      .own(name, (m) => this.deliverLocal(m))
      .catch((e: Error) => this.d.log.error({ name, err: e.message }, 'cannot consume the mail of a name'));
  }

  /** Gives a name back cluster-wide (never throws: logged); with `id`, only if `id` holds it here. */
  release(name: string, id?: number): void {
    if (id !== undefined && this.owned.get(name) !== id) return;
    if (!this.owned.delete(name)) return;
    // Stopping: the lease is revoked at close, and with it every name of this node.
    if (this.closing) return;
    const done = (this.releasing.get(name) ?? Promise.resolve())
      .then(() => this.bus.disown(name))
      .then(() => this.directory.release(name))
      .catch((e: Error) => this.d.log.warn({ name, err: e.message }, 'cannot release the cluster name'))
      .finally(() => {
        if (this.releasing.get(name) === done) this.releasing.delete(name);
      });
    this.releasing.set(name, done);
  }

  /**
   * A principal is gone for good (or escalated): its names go, and with them (unless the kernel is
   * stopping or the node lost its lease) the definition of its agent.
   */
  releaseId(id: number): void {
    const demoted = this.demoted.delete(id);
    for (const [name, holder] of [...this.owned]) {
      if (holder !== id) continue;
      this.release(name);
      if (this.defs.delete(name) && !demoted && !this.closing && !this.d.agents.shuttingDown)
        void this.directory
          .dropDef(name)
          .catch((e: Error) => this.d.log.warn({ name, err: e.message }, 'cannot drop the agent definition'));
    }
  }

  /** An agent was spawned here: one with a restart policy gets its definition stored (outlives the node). */
  async spawned(a: AgentRecord, request: SpawnArgs): Promise<void> {
    if (a.def.policy.policy === 'never') return;
    const spec: DefSpec = { v: 1, request };
    try {
      await this.directory.saveDef({ name: a.def.name, node: this.node, spec });
      this.defs.add(a.def.name);
    } catch (e) {
      this.d.log.warn(
        { agent: a.def.name, err: (e as Error).message },
        'cannot store the agent definition: it will not outlive this node',
      );
    }
  }

  /** The local id holding a cluster name this node owns. */
  private deliverLocal(m: RemoteMessage): boolean {
    const id = this.d.mail.resolve(m.to);
    if (id === undefined || !this.reachable(id)) return false;
    try {
      this.d.mail.deliver(id, m.from, m.fromName ?? '', m.message);
      return true;
    } catch (e) {
      if (e instanceof MailboxFullError || e instanceof QuotaExceededError) return false;
      throw e;
    }
  }

  private reachable(id: number): boolean {
    const a = this.d.agents.get(id);
    return a ? reachableState(a.state) : this.d.principals.isClient(id);
  }

  // ---- mail --------------------------------------------------------------------------------------------

  /**
   * Where a SEND goes when no local agent takes it: the owner on another node of `name` (`node` given:
   * only if that node owns it), or of agent id `id`. Undefined: nobody else has it.
   */
  remoteOwner(t: { id?: number; name?: string; node?: string }): NameOwner | undefined {
    const owner = t.id !== undefined ? this.directory.ownerOfId(t.id) : this.directory.owner(t.name ?? '');
    if (!owner || owner.node === this.node) return undefined;
    if (t.node !== undefined && owner.node !== t.node) return undefined;
    return owner;
  }

  /** Sends one message to a remote owner's name; resolves once JetStream stored it. */
  async send(owner: NameOwner, from: number, json: string): Promise<void> {
    try {
      await this.bus.send({
        to: owner.name,
        from,
        fromName: this.d.mail.nameOf(from) || null,
        fromNode: this.node,
        message: json,
        msgId: randomUUID(),
        sentAt: Date.now(),
      });
    } catch (e) {
      throw wireError(e, `cannot send to ${owner.name}@${owner.node}`);
    }
  }

  /** BROADCAST to the other nodes' named agents (fire and forget; logged when the bus refuses). */
  broadcast(from: number, json: string, includeSelf: boolean): void {
    try {
      this.bus.broadcast({
        from,
        fromName: this.d.mail.nameOf(from) || null,
        fromNode: this.node,
        message: json,
        includeSelf,
      });
    } catch (e) {
      this.d.log.warn({ err: (e as Error).message }, 'cannot broadcast to the other nodes');
    }
  }

  /** Another node's BROADCAST: to every local named agent that may be sent to (full mailboxes skipped). */
  private remoteBroadcast(m: RemoteBroadcast): void {
    if (m.fromNode === this.node) return;
    for (const id of this.d.mail.named()) {
      if (id === m.from || !this.reachable(id)) continue;
      try {
        this.d.mail.deliver(id, m.from, m.fromName ?? '', m.message);
      } catch (e) {
        // A full mailbox skips its recipient, as a local BROADCAST does; anything else is a bug, logged.
        if (!(e instanceof MailboxFullError || e instanceof QuotaExceededError))
          this.d.log.error({ err: e, to: id, from_node: m.fromNode }, 'cannot deliver a broadcast');
      }
    }
  }

  // ---- events ------------------------------------------------------------------------------------------

  private localEvent(type: string, data: Record<string, unknown>, source: number): void {
    if (this.closing) return;
    try {
      this.bus.publishEvent({ type, data, source, node: this.node, at: Date.now() });
    } catch (e) {
      this.d.log.debug({ type, err: (e as Error).message }, 'cannot publish the event to the cluster');
    }
  }

  private remoteEvent(e: RemoteEvent): void {
    if (e.node === this.node) return;
    const data = e.data && typeof e.data === 'object' ? (e.data as Record<string, unknown>) : {};
    this.d.events.publishRemote(e.type as KernelEventType, { ...data, node: e.node }, e.source);
  }

  // ---- nodes -------------------------------------------------------------------------------------------

  private directoryEvent(e: DirectoryEvent): void {
    switch (e.type) {
      case 'node-joined':
        this.known.set(e.node.node, e.node);
        this.lost.delete(e.node.node);
        return;
      case 'node-lost': {
        const info = this.known.get(e.node);
        if (info) this.lost.set(e.node, info);
        if (e.node !== this.node)
          void this.nodeLost(e.node).catch((err: Error) =>
            this.d.log.error({ node: e.node, err: err.message }, 'cannot take over the lost node'),
          );
        return;
      }
      case 'lease-lost':
        void this.leaseLost().catch((err: Error) =>
          this.d.log.error({ err: err.message }, 'cannot recover from the lost lease'),
        );
        return;
      default:
        return;
    }
  }

  /**
   * The survivor every node computes alike for a lost node's agents: most free memory, then fewest agents,
   * then node name.
   */
  placement(lost: string): string | undefined {
    const survivors = this.directory.nodes().filter((n) => n.node !== lost);
    survivors.sort(
      (a, b) => b.freeMemory - a.freeMemory || a.agents - b.agents || a.node.localeCompare(b.node),
    );
    return survivors[0]?.node;
  }

  /**
   * A node's lease expired: its restartable agents come back here when placement chooses this node. The
   * others look again after a lease's time and take over what is still the lost node's (the chosen
   * survivor may have died too, or seen other free-memory figures): the CAS keeps it to one winner.
   */
  private async nodeLost(lost: string): Promise<void> {
    if (this.closing) return;
    this.d.log.warn({ node: lost }, 'cluster node lost');
    if (this.placement(lost) !== this.node)
      await new Promise((r) => setTimeout(r, this.opts.leaseTtlS * 1000).unref());
    if (this.closing || this.directory.nodes().some((n) => n.node === lost)) return;
    for (const def of await this.directory.defsOf(lost)) {
      if (this.closing) return;
      if (!(await this.directory.takeOver(def))) continue;
      try {
        await this.respawn(def);
      } catch (e) {
        this.d.log.error(
          { agent: def.name, from: lost, err: (e as Error).message },
          'cannot start the agent of a lost node',
        );
      }
    }
  }

  /** Spawns a taken-over definition here, as the kernel (operator rights), under its name. */
  private async respawn(def: ClusterAgentDef, why = 'agent of a lost node started here'): Promise<void> {
    const spec = def.spec as DefSpec;
    if (spec?.v !== 1 || !spec.request) throw new Error(`unknown agent definition for ${def.name}`);
    const r = await this.d.agents.spawn(KERNEL_CALLER, { ...spec.request, name: def.name });
    this.d.log.warn({ agent: def.name, id: r.id, from: def.node }, why);
  }

  /**
   * This node's lease is gone: every name it owned may be someone else's. Its agents holding them are
   * stopped (their definitions are left to the new owners), clients lose their cluster names, and the
   * node joins again.
   */
  private async leaseLost(): Promise<void> {
    this.d.log.error(
      { node: this.node },
      'cluster lease lost: stopping the agents whose names this node owned',
    );
    const held = [...this.owned];
    this.owned.clear();
    for (const [name] of held) {
      this.defs.delete(name);
      await this.bus.disown(name).catch(() => undefined);
    }
    for (const [name, id] of held) {
      const a = this.d.agents.get(id);
      if (!a) {
        this.d.mail.unregister(id, name);
        continue;
      }
      if (this.demoted.has(id)) continue;
      this.demoted.add(id);
      if (a.state !== 'STOPPED' && a.state !== 'FAILED')
        await this.d.agents.kill(KERNEL_CALLER, a, { wait: false }).catch(() => undefined);
    }
    if (!(await this.rejoin())) return;
    await this.restartUntaken();
  }

  /**
   * After a rejoin, the definitions etcd still says are this node's were taken over by nobody: the node
   * was back before a survivor looked (an etcd restart that outlasted the lease, a short partition). Left
   * alone they would never run again, so this node takes them over itself — the same CAS as a survivor's
   * takeover, so that one of them wins should a survivor look now — and starts each once the agent it
   * stopped for the lost lease is gone.
   */
  private async restartUntaken(): Promise<void> {
    let defs: ClusterAgentDef[];
    try {
      defs = await this.directory.defsOf(this.node);
    } catch (e) {
      this.d.log.error(
        { err: (e as Error).message },
        "cannot list this node's agent definitions after the rejoin",
      );
      return;
    }
    for (const def of defs) {
      if (this.closing) return;
      const deadline = Date.now() + STOPPED_WAIT_MS;
      while (this.d.agents.list().some((a) => a.def.name === def.name) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50).unref());
      try {
        if (!(await this.directory.takeOver(def))) continue;
        await this.respawn(def, 'agent no survivor took over started again here');
      } catch (e) {
        this.d.log.error(
          { agent: def.name, err: (e as Error).message },
          'cannot start again the agent no survivor took over',
        );
      }
    }
  }

  /** Joins again after a lost lease, retrying while etcd is unreachable; false when the kernel stopped first. */
  private async rejoin(): Promise<boolean> {
    for (let delay = 500; !this.closing; delay = Math.min(delay * 2, 10_000)) {
      try {
        await this.directory.rejoin();
        this.d.log.info({ node: this.node }, 'joined the cluster again');
        return true;
      } catch (e) {
        this.d.log.warn({ err: (e as Error).message, retry_ms: delay }, 'cannot join the cluster again yet');
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
    return false;
  }

  /** Refreshes this node's NodeInfo in etcd (the directory measures memory and CPU; agents are ours). */
  private async publishInfo(): Promise<void> {
    try {
      await this.directory.publish({
        advertise: this.opts.advertise,
        version: this.d.version,
        startedAt: this.startedAt,
        agents: this.d.agents.list().length,
      });
    } catch (e) {
      this.d.log.debug({ err: (e as Error).message }, 'cannot publish the node info');
    }
  }

  // ---- kernel-to-kernel calls and operators --------------------------------------------------------------

  private async serve(method: string, args: unknown, from: string): Promise<unknown> {
    switch (method) {
      case 'list':
        return this.localList();
      default: {
        const fn = this.extraCalls.get(method);
        if (fn) return fn(args, from);
        throw new Error(`unknown cluster call ${method} from ${from}`);
      }
    }
  }

  /**
   * Why a KILL or RESTART of another node's agent (`owner`, from `remoteOwner`) is not done here. An
   * operator's call reaches the owner through ClusterRouter before any handler runs; a handler sees it only
   * when the router could not forward it (the owner died meanwhile, or the call was itself forwarded from
   * another node): not found here. Anybody else controls only the agents it spawned, on its own node.
   */
  controlRefused(caller: Caller, op: 'KILL' | 'RESTART', owner: NameOwner): Error {
    if (caller.role !== 'operator')
      return new PermissionDeniedError(
        `Permission denied: agent ${owner.name} runs on node ${owner.node}; only an operator controls another node's agents`,
        { agent_id: owner.id },
      );
    return new NotFoundError(
      `cannot ${op} ${owner.name}: it runs on node ${owner.node}, which did not take the call; try again`,
    );
  }

  private localList(): AgentInfo[] {
    return this.d.agents.list().map((a) => ({ ...this.d.agents.describe(a, true), node: this.node }));
  }

  /** LIST `all_nodes`: every other live node's agents (a node that does not answer is left out, logged). */
  async remoteList(caller: Caller): Promise<AgentInfo[]> {
    if (caller.role !== 'operator')
      throw new PermissionDeniedError(
        'Permission denied: only an operator may list the agents of every node',
      );
    const others = this.directory.nodes().filter((n) => n.node !== this.node);
    const lists = await Promise.all(
      others.map((n) =>
        this.bus.call(n.node, 'list', {}, LIST_TIMEOUT_MS).then(
          (r) => (Array.isArray(r) ? (r as AgentInfo[]) : []),
          (e: Error) => {
            this.d.log.warn({ node: n.node, err: e.message }, 'node did not answer LIST');
            return [];
          },
        ),
      ),
    );
    return lists.flat();
  }

  /**
   * Serves `clove.rpc` calls of `method` with `fn` (kernel/cluster/router.ts forwards operators' calls
   * this way), so that the forwarding code lives outside this file.
   */
  handle(method: string, fn: (args: unknown, from: string) => Promise<unknown>): void {
    this.extraCalls.set(method, fn);
  }

  /** A kernel-to-kernel call to `node` (the bus's errors as they are: the caller maps them). */
  call(node: string, method: string, args: unknown, timeoutMs: number): Promise<unknown> {
    return this.bus.call(node, method, args, timeoutMs);
  }

  /** The live members now (this node's view of etcd), this one included. */
  liveNodes(): string[] {
    return this.directory.nodes().map((n) => n.node);
  }

  /** Whether `node` is a live member now (this node's view of etcd). */
  isAlive(node: string): boolean {
    return this.directory.nodes().some((n) => n.node === node);
  }

  /** CLUSTER_NODES: every live node, then the nodes seen lost. */
  nodes(): ClusterNode[] {
    const live = this.directory.nodes();
    const out = live.map((n) => wireNode(n, true, n.node === this.node));
    for (const [name, n] of this.lost)
      if (!live.some((l) => l.node === name)) out.push(wireNode(n, false, false));
    return out;
  }

  /** CLUSTER_STATUS's fields. */
  status(operator: boolean): Record<string, unknown> {
    return {
      node: this.node,
      advertise: this.opts.advertise,
      prefix: this.opts.prefix,
      lease_ttl_s: this.opts.leaseTtlS,
      ...(operator ? { etcd: this.opts.etcd, nats: this.opts.nats } : {}),
      nodes_alive: this.directory.nodes().length,
      names_owned: this.owned.size,
    };
  }
}

function wireNode(n: NodeInfo, alive: boolean, self: boolean): ClusterNode {
  return {
    node: n.node,
    advertise: n.advertise,
    version: n.version,
    started_at: n.startedAt,
    free_memory: n.freeMemory,
    idle_cpu: n.idleCpu,
    cores: n.cores,
    agents: n.agents,
    updated_at: n.updatedAt,
    alive,
    self,
  };
}
