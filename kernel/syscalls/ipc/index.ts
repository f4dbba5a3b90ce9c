/**
 * IPC family: REGISTER, SEND, SEND_BATCH, RECV, BROADCAST. A target is an id that is alive for the kernel: a
 * supervised agent (running, paused or being restarted — its mailbox waits for it) or an open client.
 */
import type { BatchItem, BatchResult } from '../../../protocol/index.js';
import {
  defineFamily,
  errorReply,
  InvalidRequestError,
  messageFields,
  reachableState,
  MailboxFullError,
  NotFoundError,
  QuotaExceededError,
  type Services,
} from '../../core/family.js';

/** A message as the JSON text it is queued as (absent: `{}`). */
function encode(message: unknown): string {
  return message === undefined ? '{}' : JSON.stringify(message);
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
   * One SEND from `from`: resolves the target (`to` wins over `to_name`), queues the message and counts
   * it; throws what SEND refuses with. SEND and every item of SEND_BATCH go through here, so the two
   * cannot differ in what they accept or in their error texts.
   */
  function send(from: number, req: BatchItem): number {
    let to: number | undefined;
    if (req.to) to = req.to;
    else if (req.to_name) {
      to = mail.resolve(req.to_name);
      if (to === undefined)
        throw new NotFoundError(`target agent not found: ${req.to_name}`, { delivered_to: 0 });
    } else throw new InvalidRequestError('target agent required (to or to_name)', { delivered_to: 0 });
    if (!reachable(services, to))
      throw new NotFoundError(`target agent not found: ${req.to_name ?? to}`, { delivered_to: 0 });
    mail.deliver(to, from, mail.nameOf(from), encode(req.message));
    principals.stats(from).sent++;
    return to;
  }
  return {
    name: 'ipc',
    handlers: {
      REGISTER: ({ caller }, req) => {
        if (!req.name) throw new InvalidRequestError('name required');
        services.agents.mayRegister(caller, req.name);
        mail.register(caller.id, req.name, principals.budgets(caller.id).names);
        return { success: true, agent_id: caller.id, name: req.name };
      },
      SEND: ({ caller }, req) => ({ success: true, delivered_to: send(caller.id, req) }),
      SEND_BATCH: ({ caller }, req) => {
        const results: BatchResult[] = [];
        let delivered = 0;
        // Each item is a SEND of its own: a refused item gets the error SEND would have given (audited as
        // a refusal of SEND_BATCH) and stops nothing. Even a failure of the kernel stays with its item,
        // so the reply always says which items were queued and a client never resends a delivered one.
        req.messages.forEach((item, i) => {
          try {
            results.push({ delivered_to: send(caller.id, item) });
            delivered++;
          } catch (e) {
            const reply = errorReply(e);
            if (reply.code === 'internal')
              services.log.error({ err: e, op: 'SEND_BATCH', caller: caller.id, item: i }, 'syscall failed');
            services.audit.refusal(caller, 'SEND_BATCH', 'ipc', reply, { item: i });
            results.push({ error: String(reply.error), code: String(reply.code) });
          }
        });
        return {
          success: true,
          delivered_count: delivered,
          failed_count: results.length - delivered,
          results,
        };
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
      BROADCAST: ({ caller }, req) => {
        const message = encode(req.message);
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
