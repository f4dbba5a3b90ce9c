/**
 * IPC family: REGISTER, SEND, SEND_BATCH, RECV, BROADCAST. A target is an id that is alive for the kernel: a
 * supervised agent (running, paused or being restarted — its mailbox waits for it) or an open client.
 * Clustered (docs/cluster.md): a target no local agent takes — `name@node`, a name or an agent id another
 * node owns — is sent through the cluster's bus, and BROADCAST reaches the other nodes too.
 */
import type { BatchItem, BatchResult } from '../../../protocol/index.js';
import {
  defineFamily,
  errorReply,
  InvalidRequestError,
  messageFields,
  messageTexts,
  reachableState,
  MailboxFullError,
  NameTakenError,
  NotFoundError,
  QuotaExceededError,
  type Caller,
  type ClusterService,
  type NameOwner,
  type Services,
} from '../../core/family.js';

/**
 * A message as the JSON text it is queued as: the sender's own text when the payload gave it (`text`,
 * ipc/message-text.ts), else the parsed value's; absent: `{}`.
 */
function encode(message: unknown, text?: string): string {
  if (text !== undefined) return text;
  return message === undefined ? '{}' : JSON.stringify(message);
}

/** `name@node` split at its last `@` (names never hold one): node undefined for a plain name. */
function splitAddress(address: string): { name: string; node?: string } {
  const at = address.lastIndexOf('@');
  return at < 0 ? { name: address } : { name: address.slice(0, at), node: address.slice(at + 1) };
}

function reachable(s: Services, id: number): boolean {
  const a = s.agents.get(id);
  if (a) return reachableState(a.state);
  return s.principals.isClient(id);
}

export default defineFamily(({ services }) => {
  const { mail, principals } = services;
  /** Connections (by their close signal) that hold leases: what they took goes back when they close. */
  const leasing = new WeakSet<AbortSignal>();

  /**
   * Whom a SEND reaches: a local id (`to` wins over `to_name`), or — clustered — the owner on another
   * node of the name, `name@node` or agent id no local agent takes. Throws what SEND refuses with.
   */
  function target(req: BatchItem, cluster: ClusterService | undefined): number | NameOwner {
    const notFound = (what: unknown) =>
      new NotFoundError(`target agent not found: ${String(what)}`, { delivered_to: 0 });
    if (req.to) {
      if (reachable(services, req.to)) return req.to;
      const owner = cluster?.remoteOwner({ id: req.to });
      if (owner) return owner;
      throw notFound(req.to);
    }
    if (!req.to_name)
      throw new InvalidRequestError('target agent required (to or to_name)', { delivered_to: 0 });
    const { name, node } = cluster ? splitAddress(req.to_name) : { name: req.to_name, node: undefined };
    if (node === undefined || node === cluster?.node) {
      const to = mail.resolve(name);
      if (to !== undefined) {
        if (!reachable(services, to)) throw notFound(req.to_name);
        return to;
      }
      if (node !== undefined) throw notFound(req.to_name);
    }
    const owner = cluster?.remoteOwner({ name, node });
    if (owner) return owner;
    throw notFound(req.to_name);
  }

  /**
   * One SEND from `from`: resolves the target, queues the message (or hands it to the cluster's bus) and
   * counts it; throws what SEND refuses with. SEND and every item of SEND_BATCH go through here, so the two
   * cannot differ in what they accept or in their error texts. A promise only for a remote target.
   */
  function send(from: number, req: BatchItem, text?: string): number | Promise<number> {
    const cluster = services.cluster;
    const to = target(req, cluster);
    if (typeof to !== 'number') {
      return cluster!.send(to, from, encode(req.message, text)).then(() => {
        principals.stats(from).sent++;
        return to.id;
      });
    }
    mail.deliver(to, from, mail.nameOf(from), encode(req.message, text));
    principals.stats(from).sent++;
    return to;
  }

  /** SEND_BATCH's item `i`: its result, or its refusal (audited as a refusal of SEND_BATCH). */
  function refused(caller: Caller, i: number, e: unknown): BatchResult {
    const reply = errorReply(e);
    if (reply.code === 'internal')
      services.log.error({ err: e, op: 'SEND_BATCH', caller: caller.id, item: i }, 'syscall failed');
    services.audit.refusal(caller, 'SEND_BATCH', 'ipc', reply, { item: i });
    return { error: String(reply.error), code: String(reply.code) };
  }

  return {
    name: 'ipc',
    handlers: {
      REGISTER: async ({ caller }, req) => {
        if (!req.name) throw new InvalidRequestError('name required');
        services.agents.mayRegister(caller, req.name);
        const cluster = services.cluster;
        // Clustered: the name is claimed in the whole cluster first (the same refusal as a local holder's).
        if (cluster && mail.resolve(req.name) !== caller.id) {
          const held = mail.resolve(req.name);
          if (held !== undefined) throw new NameTakenError('name already registered', { agent_id: held });
          await cluster.claim(req.name, caller.id, caller.identity ?? caller.name, 'name already registered');
          try {
            mail.register(caller.id, req.name, principals.budgets(caller.id).names);
          } catch (e) {
            cluster.release(req.name, caller.id);
            throw e;
          }
        } else mail.register(caller.id, req.name, principals.budgets(caller.id).names);
        services.agents.registered(caller, req.name);
        return { success: true, agent_id: caller.id, name: req.name };
      },
      SEND: ({ caller, payload }, req) => {
        const to = send(caller.id, req, payload && messageTexts(payload, false)?.[0]);
        return typeof to === 'number'
          ? { success: true, delivered_to: to }
          : to.then((id) => ({ success: true as const, delivered_to: id }));
      },
      SEND_BATCH: ({ caller, payload }, req) => {
        const results: BatchResult[] = [];
        // The senders' texts, one per item (or none: each item's value is encoded).
        const found = payload && messageTexts(payload, true);
        const texts = found?.length === req.messages.length ? found : undefined;
        let delivered = 0;
        // `results: "refused"` (and `"none"`, whose refusals leave as SEND_REFUSED: core/dispatch.ts):
        // only what was refused, with its index (a sender at high rates reads back a few bytes instead
        // of one result per message).
        const all = req.results === 'all';
        const reply = () => ({
          success: true as const,
          delivered_count: delivered,
          failed_count: req.messages.length - delivered,
          results,
        });
        const ok = (to: number): void => {
          if (all) results.push({ delivered_to: to });
          delivered++;
        };
        const no = (i: number, e: unknown): void => {
          const r = refused(caller, i, e);
          results.push(all ? r : { index: i, ...r });
        };
        // Each item is a SEND of its own: a refused item gets the error SEND would have given (audited as
        // a refusal of SEND_BATCH) and stops nothing. Even a failure of the kernel stays with its item,
        // so the reply always says which items were queued and a client never resends a delivered one.
        // Items go in order; the first remote one (clustered) makes the rest wait for it.
        const run = async (from: number, first: Promise<number>): Promise<ReturnType<typeof reply>> => {
          for (let i = from; i < req.messages.length; i++) {
            try {
              ok(i === from ? await first : await send(caller.id, req.messages[i], texts?.[i]));
            } catch (e) {
              no(i, e);
            }
          }
          return reply();
        };
        for (let i = 0; i < req.messages.length; i++) {
          try {
            const to = send(caller.id, req.messages[i], texts?.[i]);
            if (typeof to !== 'number') return run(i, to);
            ok(to);
          } catch (e) {
            no(i, e);
          }
        }
        return reply();
      },
      RECV: async (ctx, req) => {
        const id = ctx.caller.id;
        if (req.wait && req.max > 0 && mail.size(id) === 0) {
          await ctx.park(
            () => mail.size(id) > 0,
            (ms, signal) => mail.wait(id, ms, signal),
            req.timeout_ms,
          );
        }
        // A closed connection takes nothing: the messages stay for the next RECV.
        if (ctx.signal.aborted) return { success: true, messages: [], count: 0 };
        if (req.lease && !leasing.has(ctx.signal)) {
          leasing.add(ctx.signal);
          // Its process died (or hung up) before it could handle what it took: redeliver.
          ctx.onClose(() => mail.requeueLeases(id, ctx.signal));
        }
        const now = Date.now();
        const messages = mail.take(id, req.max, ctx.signal, req.lease, services.kernel.maxReplyBytes);
        principals.stats(id).received += messages.length;
        // The reply splices each message's stored JSON text: nothing is parsed or encoded again.
        const items = messages.map((m) => `{${messageFields(m, now)}}`);
        return Buffer.from(`{"success":true,"messages":[${items.join(',')}],"count":${items.length}}`);
      },
      PUSH: () => {
        throw new InvalidRequestError(
          'PUSH is sent by the kernel, never by a client: opt in to pushed messages and events with HELLO {"push": {"messages": true, "events": true}}',
        );
      },
      PUSH_BINARY: () => {
        throw new InvalidRequestError(
          'PUSH_BINARY is sent by the kernel, never by a client: opt in to binary pushed messages with HELLO {"push": {"messages": true, "format": "binary"}}',
        );
      },
      SEND_REFUSED: () => {
        throw new InvalidRequestError(
          'SEND_REFUSED is sent by the kernel, never by a client: it answers a SEND_BATCH with {"results": "none"} that had something refused',
        );
      },
      BROADCAST: ({ caller, payload }, req) => {
        const message = encode(req.message, payload && messageTexts(payload, false)?.[0]);
        const name = mail.nameOf(caller.id);
        let delivered = 0;
        let failed = 0;
        // A full mailbox skips its recipient; the sender's own budget stops the broadcast, and every
        // recipient not reached counts as failed (an error if nobody was reached).
        let stopped: QuotaExceededError | undefined;
        for (const id of mail.named()) {
          if ((id === caller.id && !req.include_self) || !reachable(services, id)) continue;
          if (stopped) {
            failed++;
            continue;
          }
          try {
            mail.deliver(id, caller.id, name, message);
            delivered++;
          } catch (e) {
            if (e instanceof QuotaExceededError && delivered === 0) throw e;
            if (e instanceof QuotaExceededError) stopped = e;
            else if (!(e instanceof MailboxFullError)) throw e;
            failed++;
          }
        }
        principals.stats(caller.id).sent += delivered;
        // Clustered: the other nodes' named agents get it too (counted there, not here).
        services.cluster?.broadcast(caller.id, message, req.include_self);
        return {
          success: true,
          delivered_count: delivered,
          failed_count: failed,
          ...(stopped ? { quota_exceeded: String(stopped.extra.budget) } : {}),
        };
      },
    },
  };
});
