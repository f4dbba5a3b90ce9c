/**
 * The cluster router (docs/cluster.md "Operators"): an operator's call on any node reaches the agent
 * wherever it runs. SPAWN with `node` runs on that node; KILL, RESTART, PAUSE and RESUME of an agent
 * another node owns (by id: `ids/<id>`, by name: `names/<name>`) run on the owner. The call goes over
 * `clove.rpc.<node>` (method `op`); the owner dispatches it as a stand-in operator (`operator@<from>`)
 * through its own dispatcher (validation, handler, audit) and its reply is the reply. Handlers never know.
 *
 * Only operators' calls are forwarded: anybody else acts on this node's agents as before, and a
 * non-operator's SPAWN `node` is refused (audited by the dispatcher). A kernel without --cluster uses this
 * router too: SPAWN `node` there is `not_clustered`.
 */
import type { Logger } from 'pino';
import type { OpName } from '../../protocol/index.js';
import type { AgentService } from '../agents/agents.js';
import type { Reply } from '../core/connection.js';
import type { Caller } from '../core/context.js';
import type { Dispatcher, Router } from '../core/dispatch.js';
import {
  ClusterUnavailableError,
  InvalidRequestError,
  NotClusteredError,
  NotFoundError,
  PermissionDeniedError,
} from '../core/errors.js';
import type { Principal, Principals } from '../core/principals.js';
import type { ClusterService } from './cluster.js';

/** The calls forwarded to the node that runs their target. */
const TARGETED = new Set<OpName>(['KILL', 'RESTART', 'PAUSE', 'RESUME']);

/** The `clove.rpc` method of a forwarded call. */
const METHOD = 'op';

/** How long a forwarded SPAWN may take on the other node (a sandbox set up on a busy machine). */
const SPAWN_TIMEOUT_MS = 60_000;
/** Beyond a KILL's or RESTART's grace period (default 5 s), the time the other node may take. */
const CALL_SLACK_MS = 30_000;

/** How long the owner may take for a KILL or RESTART: its grace period (default 5 s) and some slack. */
function graceOf(req: unknown): number {
  const g = (req as { grace_ms?: unknown }).grace_ms;
  return (typeof g === 'number' ? g : 5000) + CALL_SLACK_MS;
}

interface ForwardedCall {
  op: OpName;
  req: Record<string, unknown>;
}

export interface RouterDeps {
  cluster?: ClusterService;
  agents: AgentService;
  principals: Principals;
  log: Logger;
}

export class ClusterRouter implements Router {
  private dispatcher?: Dispatcher;
  /** The stand-in operators of other nodes' operators, by node: their calls are never forwarded again. */
  private readonly standIns = new Map<string, Principal>();
  private readonly standInIds = new Set<number>();

  constructor(private readonly d: RouterDeps) {}

  /** Serves other nodes' forwarded calls through `dispatcher` (called once it exists). */
  attach(dispatcher: Dispatcher): void {
    this.dispatcher = dispatcher;
    this.d.cluster?.handle(METHOD, (args, from) => this.serve(args, from));
  }

  route(op: OpName, req: unknown, caller: Caller): 'local' | Promise<Reply> {
    if (op === 'SPAWN') return this.routeSpawn(req as Record<string, unknown>, caller);
    const cluster = this.d.cluster;
    if (!TARGETED.has(op) || !cluster || caller.role !== 'operator' || this.standInIds.has(caller.id))
      return 'local';
    const t = req as { id?: number; name?: string };
    // A local agent by that id or name wins (as SEND's local name does); the handler reports the rest.
    if (!t.id && !t.name) return 'local';
    const timeoutMs = graceOf(req);
    const fwd = req as Record<string, unknown>;
    // `name@node` (as SEND takes it): that node's agent; `name@<this node>` is the local name.
    const at = t.id ? -1 : t.name!.lastIndexOf('@');
    if (at > 0) {
      const node = t.name!.slice(at + 1);
      if (node === cluster.node) return 'local';
      if (!cluster.isAlive(node)) return 'local';
      return this.forward(cluster, node, op, { ...fwd, name: t.name!.slice(0, at) }, timeoutMs);
    }
    const target = t.id ? { id: t.id } : { name: t.name! };
    try {
      this.d.agents.find(target);
      return 'local';
    } catch {
      /* not here: perhaps another node's */
    }
    const owner = cluster.remoteOwner(target);
    if (!owner) return this.search(cluster, op, fwd, target);
    return this.forward(cluster, owner.node, op, fwd, timeoutMs);
  }

  /**
   * A target neither here nor in this node's copy of etcd's names: the copy may lag (an agent spawned on
   * another node a moment ago), so every other live node is asked; at most one has it (ids and names are
   * unique cluster-wide). Its reply is the reply; nobody having it is `not_found` as a local miss says it.
   */
  private async search(
    cluster: ClusterService,
    op: OpName,
    req: Record<string, unknown>,
    target: { id?: number; name?: string },
  ): Promise<Reply> {
    const timeoutMs = graceOf(req);
    const others = cluster.liveNodes().filter((n) => n !== cluster.node);
    const replies = await Promise.all(
      others.map((n) =>
        this.forward(cluster, n, op, req, timeoutMs).catch((e: Error) => {
          this.d.log.warn({ node: n, op, err: e.message }, 'node did not answer a forwarded call');
          return undefined;
        }),
      ),
    );
    const found = replies.find((r) => r && (r as { code?: unknown }).code !== 'not_found');
    if (found) return found;
    throw new NotFoundError(`agent not found: ${target.name ?? target.id}`, { agent_id: target.id ?? 0 });
  }

  /** SPAWN `node`: here when it is this node, else forwarded; refused without a cluster or an operator. */
  private routeSpawn(req: Record<string, unknown>, caller: Caller): 'local' | Promise<Reply> {
    const node = req.node;
    if (node === undefined) return 'local';
    const cluster = this.d.cluster;
    if (!cluster)
      throw new NotClusteredError(
        `SPAWN on node ${String(node)}: this kernel is not part of a cluster (start it with --cluster)`,
      );
    if (caller.role !== 'operator')
      throw new PermissionDeniedError(
        'Permission denied: only an operator may choose the node an agent runs on',
      );
    // The handler (and the definition stored for a takeover) never sees `node`: where it runs is here.
    delete req.node;
    if (node === cluster.node || this.standInIds.has(caller.id)) return 'local';
    if (typeof node !== 'string' || !cluster.isAlive(node))
      throw new NotFoundError(`no such node in the cluster: ${String(node)}`);
    return this.forward(cluster, node, 'SPAWN', req, SPAWN_TIMEOUT_MS);
  }

  /** One call to `node`; its reply (success or error) is the reply; a node that cannot be reached is cluster_unavailable. */
  private async forward(
    cluster: ClusterService,
    node: string,
    op: OpName,
    req: Record<string, unknown>,
    timeoutMs: number,
  ): Promise<Reply> {
    const call: ForwardedCall = { op, req };
    try {
      const reply = await cluster.call(node, METHOD, call, timeoutMs);
      if (!reply || typeof reply !== 'object') throw new Error(`node ${node} gave no reply to ${op}`);
      return reply;
    } catch (e) {
      throw new ClusterUnavailableError(`cannot run ${op} on node ${node}: ${(e as Error).message}`, {
        node,
      });
    }
  }

  /**
   * Another node's operator call: run here as that node's stand-in operator, through the whole dispatch
   * path (so it is validated, audited and observed as a local call is); the reply goes back as it is.
   */
  private async serve(args: unknown, from: string): Promise<unknown> {
    const call = args as Partial<ForwardedCall> | null;
    const op = call?.op;
    if (!op || !(op === 'SPAWN' || TARGETED.has(op)) || !call.req || typeof call.req !== 'object')
      throw new InvalidRequestError(`invalid forwarded call from node ${from}`);
    if (!this.dispatcher) throw new ClusterUnavailableError('this node is not ready for forwarded calls');
    const reply = await this.dispatcher.dispatchAs(
      this.standIn(from),
      op,
      Buffer.from(JSON.stringify(call.req)),
      new AbortController().signal,
    );
    if (Buffer.isBuffer(reply)) return JSON.parse(reply.toString('utf8')) as unknown;
    if (typeof reply === 'string') return JSON.parse(reply) as unknown;
    return reply;
  }

  /** The operator another node's operators act as here, made once per node (operator rights). */
  private standIn(from: string): Principal {
    const have = this.standIns.get(from);
    if (have) return have;
    const p: Principal = { id: this.d.principals.allocate(), role: 'operator', name: `operator@${from}` };
    this.d.principals.clientOpened(p);
    this.standIns.set(from, p);
    this.standInIds.add(p.id);
    return p;
  }
}
