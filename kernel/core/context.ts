/**
 * What a syscall family sees of the kernel: who is calling, the services it may use, and hooks on the
 * caller's connection. Families never hold the kernel object; the kernel (kernel.ts) builds the
 * services once and the dispatcher hands each call a SyscallContext.
 */
import type { ArgsOf, AsyncAccepted, OpName, Replies } from '../../protocol/index.js';
import type { Permissions } from '../perms/permissions.js';
import type { AgentService } from '../agents/agents.js';
import type { Mail } from '../ipc/mailboxes.js';
import type { EventBus, KernelEventType } from '../events/bus.js';
import type { StateStore } from '../state/store.js';
import type { MetricsService } from '../metrics/service.js';
import type { AuditLog } from '../audit/log.js';
import type { QuotaService } from '../quotas/service.js';
import type { AsyncCalls } from './async.js';
import type { ClusterService } from '../cluster/cluster.js';
import type { TunnelClient } from '../tunnel/client.js';
import type { RelayTransport } from '../tunnel/transport.js';
import type { WorldService } from '../worlds/service.js';
import type { Journal } from '../journal/service.js';
import type { Principals, Principal } from './principals.js';
import type { PushPort } from './connection.js';
import type { Logger } from 'pino';

export type { Principal };

/** The caller of one syscall: its identity and its rights at the time of the call. */
export interface Caller extends Principal {
  perms: Permissions;
}

/** What a family may say about the kernel itself (HELLO). */
export interface KernelInfo {
  version: string;
  maxPayload: number;
  /** The deepest nesting a JSON request may have. */
  maxDepth: number;
  /** The most bytes of messages or events one RECV or POLL_EVENTS reply carries. */
  maxReplyBytes: number;
  dataDir: string;
  agentSocket: string;
  sandbox: Record<string, unknown>;
}

/** The shared services, built once by the kernel. A family that needs a service of its own builds it in its factory. */
export interface Services {
  kernel: KernelInfo;
  principals: Principals;
  agents: AgentService;
  mail: Mail;
  events: EventBus;
  store: StateStore;
  metrics: MetricsService;
  /** The audit log: lifecycle and security decisions (the dispatcher records every denial itself). */
  audit: AuditLog;
  /** Resource quotas: limits, usage counted by the kernel, enforcement (docs/protocol.md "Quotas"). */
  quotas: QuotaService;
  /** Calls made with `async: true`: their results wait for ASYNC_RESULTS. */
  async: AsyncCalls;
  /** Simulated worlds (docs/worlds.md): the files, http and exec families ask it first for a member. */
  worlds: WorldService;
  /** Journaled steps (docs/durable.md): the dispatcher runs journaled opcodes through it; the journal family. */
  journal: Journal;
  /** With `--cluster` only (docs/cluster.md): names, mail and agents of the other nodes. */
  cluster?: ClusterService;
  /** The tunnel to a relay (docs/relay.md) and the remote sessions that came through it. */
  tunnel: { client: TunnelClient; remotes: RelayTransport };
  /** Publishes a kernel event (source 0) or a client's (source = its id). */
  publish(type: KernelEventType, data: Record<string, unknown>, source: number): number;
  log: Logger;
}

/** Where a call came from: the seat for transports other than the Unix sockets (relay, HTTP). */
export interface TransportInfo {
  /** e.g. `unix:operator`, `unix:agent`. */
  kind: string;
}

export interface SyscallContext {
  readonly caller: Caller;
  readonly services: Services;
  readonly transport: TransportInfo;
  /** Aborted when the caller's connection closes. */
  readonly signal: AbortSignal;
  /**
   * Parks the call until `ready()` holds, `timeoutMs` passes or the connection closes, sleeping on
   * `wait` (which resolves when something arrives). Time parked counts as activity for the watchdog.
   */
  park(
    ready: () => boolean,
    wait: (ms: number, signal: AbortSignal) => Promise<unknown>,
    timeoutMs: number,
  ): Promise<void>;
  /** Runs `fn` once when the caller's connection closes (at once if it already has). */
  onClose(fn: () => void): void;
  /** The caller's connection as a target of unsolicited PUSH frames (absent for calls without a socket). */
  readonly push?: PushPort;
  /** The request's payload as it came (the ipc family reads each message's text from it). */
  readonly payload?: Buffer;
}

export type RawReply = Buffer | string;
/** A JSON reply already encoded (a handler that splices stored JSON texts returns the bytes). */
export type EncodedReply = Buffer;
/** What a handler may reply: its reply, the bytes of it, or (EXEC, HTTP, THINK) the accept of an async call. */
export type ReplyOf<N extends OpName> = N extends keyof Replies
  ? Replies[N] | EncodedReply | AsyncAccepted
  : RawReply;
export type RequestOf<N extends OpName> = N extends keyof ArgsOf ? ArgsOf[N] : Buffer;

export type Handler<N extends OpName> = (
  ctx: SyscallContext,
  req: RequestOf<N>,
) => ReplyOf<N> | Promise<ReplyOf<N>>;

export type Handlers = { [N in OpName]?: Handler<N> };

/** A syscall family: a name and its handlers, keyed by the contract's opcode names. */
export interface Family {
  name: string;
  handlers: Handlers;
  /** Releases what the family holds (kernel shutdown). */
  close?(): void | Promise<void>;
}

/** One finished syscall, as observers see it (the audit log's `log_syscalls`, recording). */
export interface SyscallRecord {
  op: OpName;
  caller: Caller;
  /** The validated request (a Buffer for raw opcodes). */
  request: unknown;
  /** The reply as sent (an object, or the encoded bytes for spliced replies). */
  reply: unknown;
  success: boolean;
  durationUs: number;
}

/** What a family factory gets to build its handlers (and any service of its own). */
export interface FamilyEnv {
  services: Services;
  /** Calls `fn` after every syscall (keep it cheap: it runs on the kernel's event loop). */
  observe(fn: (r: SyscallRecord) => void): void;
  /**
   * Runs a call as `principal`, a stand-in the family created itself (Principals.allocate/clientOpened),
   * through the dispatcher's whole path (Dispatcher.dispatchAs); `signal` stands for its connection
   * closing. Only the record family's replay uses it.
   */
  dispatchAs?(
    principal: Principal,
    op: OpName,
    payload: Buffer,
    signal: AbortSignal,
  ): Promise<Buffer | string | object>;
}

export type FamilyFactory = (env: FamilyEnv) => Family;

/** Declares a family; the identity function only fixes its types. */
export function defineFamily(factory: FamilyFactory): FamilyFactory {
  return factory;
}
