/**
 * IPC syscalls: REGISTER, SEND, RECV, BROADCAST. A target is an id that is alive for the kernel: a
 * supervised agent (running, paused or being restarted — its mailbox waits for it) or an open client.
 */
import { InvalidRequestError, NotFoundError, MailboxFullError } from '../errors.js';
import type { Caller, Kernel } from '../kernel.js';
import { optBool, optInt, optString, reqString } from '../validate.js';
import type { HandlerTable } from './index.js';
import { parkUntil } from '../ipc/waiters.js';

const MAX_WAIT_MS = 300_000;

function reachable(k: Kernel, id: number): boolean {
  const a = k.supervisor.get(id);
  if (a) return a.state !== 'FAILED' && a.state !== 'STOPPED';
  return k.clients.has(id);
}

function senderName(k: Kernel, c: Caller): string {
  return k.post.nameOf(c.principal.id);
}

function shape(
  m: { from: number; from_name: string; message: unknown; seq: number; sentAt: number },
  now: number,
) {
  return { from: m.from, from_name: m.from_name, message: m.message, age_ms: now - m.sentAt, seq: m.seq };
}

export const ipc: HandlerTable = {
  REGISTER: {
    fn: (k, c, p) => {
      const name = reqString(p, 'name');
      k.post.register(c.principal.id, name);
      return { success: true, agent_id: c.principal.id, name };
    },
  },
  SEND: {
    fn: (k, c, p) => {
      const to = optInt(p, 'to', 0, 0xffffffff) ?? 0;
      const toName = optString(p, 'to_name');
      let target: number | undefined;
      if (to) target = to;
      else if (toName) {
        target = k.post.resolve(toName);
        if (target === undefined)
          throw new NotFoundError(`target agent not found: ${toName}`, { delivered_to: 0 });
      } else throw new InvalidRequestError('target agent required (to or to_name)', { delivered_to: 0 });
      if (!reachable(k, target))
        throw new NotFoundError(`target agent not found: ${toName ?? target}`, { delivered_to: 0 });
      const message = p.message === undefined ? {} : p.message;
      k.post.deliver(target, c.principal.id, senderName(k, c), message);
      k.stats(c.principal.id).sent++;
      return { success: true, delivered_to: target };
    },
  },
  RECV: {
    fn: (k, c, p) => {
      const max = optInt(p, 'max', 0, 10_000) ?? 10;
      const wait = optBool(p, 'wait') ?? false;
      const timeout = optInt(p, 'timeout_ms', 0, MAX_WAIT_MS) ?? 30_000;
      const lease = optBool(p, 'lease') ?? false;
      const id = c.principal.id;
      const take = () => {
        const now = Date.now();
        // A closed connection takes nothing: the messages stay for the next RECV.
        if (c.conn.abort.signal.aborted) return { success: true, messages: [], count: 0 };
        const messages = k.post.take(id, max, c.conn, lease).map((m) => shape(m, now));
        k.stats(id).received += messages.length;
        return { success: true, messages, count: messages.length };
      };
      if (!wait || max === 0 || k.post.size(id) > 0) return take();
      const signal = c.conn.abort.signal;
      return parkUntil(
        () => k.post.size(id) > 0,
        (ms, sig) => k.post.wait(id, ms, sig),
        timeout,
        signal,
      ).then(take);
    },
  },
  BROADCAST: {
    fn: (k, c, p) => {
      const includeSelf = optBool(p, 'include_self') ?? false;
      const message = p.message === undefined ? {} : p.message;
      const from = c.principal.id;
      const name = senderName(k, c);
      let delivered = 0;
      let failed = 0;
      for (const id of k.post.named()) {
        if ((id === from && !includeSelf) || !reachable(k, id)) continue;
        try {
          k.post.deliver(id, from, name, message);
          delivered++;
        } catch (e) {
          if (!(e instanceof MailboxFullError)) throw e;
          failed++;
        }
      }
      return { success: true, delivered_count: delivered, failed_count: failed };
    },
  },
};
