/**
 * The syscall table and the path of one request through it: look the opcode up, parse and validate
 * the payload against the contract, ask the router where the call runs, build the caller's context and
 * run the family's handler. Anything a handler throws becomes an error reply; nothing a client sends
 * can throw past this point.
 */
import { Op, opInfo, opName, type Frame, type OpName } from '../../protocol/index.js';
import { preset } from '../perms/permissions.js';
import { QuietAnswer, type Connection, type PushPort, type Reply } from './connection.js';
import type {
  Caller,
  FamilyFactory,
  Handler,
  Principal,
  Services,
  SyscallContext,
  SyscallRecord,
} from './context.js';
import { errorReply, NotSupportedError, UnknownOpcodeError } from './errors.js';
import { checkDepth, parseObject, validateRequest } from './validate.js';
import { parkUntil } from './waiters.js';

/** The watchdog's view of activity: every syscall is a beat, a parked call keeps the caller alive. */
export interface Liveness {
  beat(id: number): void;
  /** +1 when a call of `id` parks in a blocking wait, -1 when it returns. */
  parked(id: number, delta: 1 | -1): void;
}

/**
 * Where a call runs. The local router runs everything here; a cluster router (a later issue) forwards
 * calls whose target lives on another node and returns that node's reply. Handlers never know.
 */
export interface Router {
  route(op: OpName, req: unknown, caller: Caller): 'local' | Promise<Reply>;
}

export const localRouter: Router = { route: () => 'local' };

/**
 * What a call needs of where it came from: a connection, or the stand-in `dispatchAs` builds (who calls,
 * the signal that ends its blocking waits, the transport kind its handlers see).
 */
type CallSite = Pick<Connection, 'principal' | 'transport'> & {
  abort: { readonly signal: AbortSignal };
  push?: PushPort;
  /** A connection: a request that asks for no reply on success gets a QuietAnswer (see `quietly`). */
  answersQuietly?: boolean;
};

/**
 * SEND_BATCH `results: "none"` (ipc.json): on success no frame at all, else one SEND_REFUSED frame with
 * what the reply would have said and the batch's `ref`. Whatever refused it (the payload's shape, a right,
 * a quota, the items), the answer is of this kind once the payload is an object that asks for it.
 */
function quietly(reply: Reply, ref: unknown): QuietAnswer {
  const r = reply as { success?: unknown; failed_count?: unknown };
  if (r.success === true && r.failed_count === 0) return new QuietAnswer(null);
  const id = typeof ref === 'number' && Number.isSafeInteger(ref) && ref >= 0 ? ref : null;
  return new QuietAnswer({ opcode: Op.SEND_REFUSED, payload: { ref: id, ...r } });
}

interface Entry {
  name: OpName;
  family: string;
  raw: boolean;
  /** The contract's `journaled`: inside a journaled step the call goes through the journal (docs/durable.md). */
  journaled: boolean;
  fn: Handler<OpName>;
}

export class Dispatcher {
  private readonly table = new Map<number, Entry>();
  private readonly closers: (() => void | Promise<void>)[] = [];
  private readonly observers: ((r: SyscallRecord) => void)[] = [];

  constructor(
    private readonly services: Services,
    private readonly liveness: Liveness,
    private readonly router: Router = localRouter,
  ) {}

  /** Adds a family's handlers; an opcode registered twice is a programming error. */
  register(factory: FamilyFactory): void {
    const family = factory({
      services: this.services,
      observe: (fn) => this.observers.push(fn),
      dispatchAs: (principal, op, payload, signal) => this.dispatchAs(principal, op, payload, signal),
    });
    for (const [name, fn] of Object.entries(family.handlers)) {
      const code = Op[name as OpName];
      const prev = this.table.get(code);
      if (prev) throw new Error(`syscall ${name} registered by ${prev.family} and ${family.name}`);
      const info = opInfo(code)!;
      this.table.set(code, {
        name: name as OpName,
        family: family.name,
        raw: info.raw,
        journaled: info.journaled,
        fn: fn as Handler<OpName>,
      });
    }
    if (family.close) this.closers.push(() => family.close!());
  }

  /** Adds an observer of every finished call (as families' `observe`): the kernel's own bookkeeping. */
  observe(fn: (r: SyscallRecord) => void): void {
    this.observers.push(fn);
  }

  /** Opcodes of the contract that no family implements. */
  unimplemented(): OpName[] {
    return (Object.keys(Op) as OpName[]).filter((n) => !this.table.has(Op[n]));
  }

  async close(): Promise<void> {
    for (const c of this.closers) await c();
  }

  /**
   * Runs one call as `principal` without a connection: the record family's replay, which issues recorded
   * requests as stand-ins of the recorded callers. The same path as a frame from a socket (validation,
   * routing, the handler, the observers, denials audited), with the caller's rights as `principals`
   * holds them; `signal` stands for the connection closing (blocking waits end, `onClose` hooks run) and
   * handlers see transport kind `transport` (`replay` unless told). Only a family that creates its own
   * stand-in principals may use it (FamilyEnv.dispatchAs), and the kernel's HTTP API (kernel/http/),
   * whose REST verbs run as the operator principal the kernel made for it, with transport kind `http`.
   */
  async dispatchAs(
    principal: Principal,
    op: OpName,
    payload: Buffer,
    signal: AbortSignal,
    transport = 'replay',
  ): Promise<Reply> {
    const site: CallSite = { principal, transport, abort: { signal } };
    return this.dispatch(site, { agentId: principal.id, opcode: Op[op], payload });
  }

  dispatch(conn: CallSite, frame: Frame): Reply | Promise<Reply> {
    const principal = conn.principal;
    const { principals } = this.services;
    if (principal.role === 'agent') {
      this.liveness.beat(principal.id);
      principals.stats(principal.id).syscalls++;
    }
    const entry = this.table.get(frame.opcode);
    if (!entry) {
      return errorReply(
        opInfo(frame.opcode)
          ? new NotSupportedError(`${opName(frame.opcode)} is not supported by this kernel yet`)
          : new UnknownOpcodeError(`unknown opcode 0x${frame.opcode.toString(16).padStart(2, '0')}`),
      );
    }
    const caller: Caller = { ...principal, perms: principals.rights(principal.id) ?? preset('minimal') };
    const started = process.hrtime.bigint();
    // Set once the payload is read: the answer is then a QuietAnswer, the observers still see the reply.
    let quiet: { ref: unknown } | undefined;
    const answer = (reply: Reply): Reply => (quiet ? quietly(reply, quiet.ref) : reply);
    try {
      let req: unknown = frame.payload;
      if (!entry.raw) {
        checkDepth(frame.payload, this.services.kernel.maxDepth);
        const payload = parseObject(frame.payload);
        if (conn.answersQuietly && entry.name === 'SEND_BATCH' && payload.results === 'none')
          quiet = { ref: payload.ref };
        validateRequest(entry.name, payload);
        req = payload;
      }
      const routed = this.router.route(entry.name, req, caller);
      const r = routed === 'local' ? this.run(entry, this.context(conn, caller, frame.payload), req) : routed;
      if (r instanceof Promise)
        return r.then(
          (reply) => answer(this.observed(entry.name, caller, req, reply, true, started)),
          (e: unknown) =>
            answer(this.observed(entry.name, caller, req, this.fail(entry.name, caller, e), false, started)),
        );
      return answer(this.observed(entry.name, caller, req, r, true, started));
    } catch (e) {
      return answer(
        this.observed(entry.name, caller, frame.payload, this.fail(entry.name, caller, e), false, started),
      );
    }
  }

  /**
   * Runs the handler; a journaled opcode's call goes through the journal, which answers it from a step's
   * journal or lets it run and journals its reply (docs/durable.md). Families never know.
   */
  private run(entry: Entry, ctx: SyscallContext, req: unknown): Reply | Promise<Reply> {
    if (!entry.journaled) return entry.fn(ctx, req as never);
    return this.services.journal.run(ctx, entry.name, req, () => entry.fn(ctx, req as never)) as
      Reply | Promise<Reply>;
  }

  /** Tells the observers (when there are any) about a finished call; returns its reply. */
  private observed(
    op: OpName,
    caller: Caller,
    request: unknown,
    reply: Reply,
    success: boolean,
    started: bigint,
  ): Reply {
    if (this.observers.length) {
      const record: SyscallRecord = {
        op,
        caller,
        request,
        reply,
        success,
        durationUs: Number((process.hrtime.bigint() - started) / 1000n),
      };
      for (const fn of this.observers) {
        try {
          fn(record);
        } catch (e) {
          this.services.log.error({ err: e, op }, 'syscall observer failed');
        }
      }
    }
    return reply;
  }

  private context(conn: CallSite, caller: Caller, payload: Buffer): SyscallContext {
    const signal = conn.abort.signal;
    const liveness = this.liveness;
    return {
      caller,
      services: this.services,
      payload,
      transport: { kind: conn.transport },
      signal,
      // Read only by HELLO: a connection that never pushes never makes its push port.
      get push() {
        return conn.push;
      },
      async park(ready, wait, timeoutMs) {
        if (ready() || signal.aborted) return;
        liveness.parked(caller.id, 1);
        try {
          await parkUntil(ready, wait, timeoutMs, signal);
        } finally {
          liveness.parked(caller.id, -1);
        }
      },
      onClose(fn) {
        if (signal.aborted) queueMicrotask(fn);
        else signal.addEventListener('abort', fn, { once: true });
      },
    };
  }

  private fail(op: OpName, caller: Caller, e: unknown): Reply {
    const reply = errorReply(e);
    if (reply.code === 'internal')
      this.services.log.error({ err: e, op, caller: caller.id }, 'syscall failed');
    // Every refusal is audited, whichever family refused: here, once, not in each handler.
    this.services.audit.refusal(caller, op, opInfo(Op[op])?.family ?? '', reply);
    return reply;
  }
}
