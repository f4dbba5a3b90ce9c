/**
 * SEND_BATCH on the TypeScript path, against a real kernel, real agents and the real audit log: each
 * item is a SEND (same targets, same errors), items are independent, refused items are audited, the
 * sender's counters count what was delivered, and a request of the wrong shape delivers nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { startKernel, until, type TestKernel } from '../../../harness/kernel.js';
import { Op } from '../../../protocol/index.js';
import { InvalidRequestError, type CloveClient } from '../../../sdk/typescript/client.js';

const probe = path.join(import.meta.dirname, '..', '..', 'testdata', 'probe_agent.py');
let tk: TestKernel;
let op: CloveClient;

beforeAll(async () => {
  tk = await startKernel({ mailboxSize: 4096 });
  op = await tk.client();
});
afterAll(async () => tk?.stop());

/** A client holding `name`, and its id. */
async function sink(name: string): Promise<{ c: CloveClient; id: number }> {
  const c = await tk.client();
  await c.register(name);
  return { c, id: (await c.hello()).agent_id };
}

/** Takes `n` messages from `c`'s mailbox (waiting in the kernel for each batch). */
async function take(c: CloveClient, n: number): Promise<unknown[]> {
  const got: unknown[] = [];
  while (got.length < n) {
    const r = await c.recv({ max: 10_000, timeoutMs: 10_000 });
    if (r.count === 0) break;
    got.push(...r.messages.map((m) => m.message));
  }
  return got;
}

describe('SEND_BATCH', () => {
  it('delivers 4096 items in order, and refuses 4097 or an item of the wrong shape as a whole', async () => {
    const { c, id } = await sink('batch-big');
    const items = Array.from({ length: 4096 }, (_, i) => ({ to: id, message: { i } }));
    const r = await op.sendBatch(items);
    expect(r).toMatchObject({ success: true, delivered_count: 4096, failed_count: 0 });
    expect(r.results.every((x) => x.delivered_to === id)).toBe(true);
    expect(await take(c, 4096)).toEqual(items.map((x) => x.message));

    await expect(op.sendBatch([...items, { to: id, message: 'one too many' }])).rejects.toThrow(
      InvalidRequestError,
    );
    await expect(op.sendBatch([])).rejects.toThrow(InvalidRequestError);
    const bad = await op
      .call(Op.SEND_BATCH, { messages: [{ to: id, message: 'fine' }, { to: 'x' }] })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(InvalidRequestError);
    const notObject = await op.raw(Op.SEND_BATCH, { messages: [{ to: id }, 5] });
    expect(JSON.parse(notObject.toString())).toMatchObject({ success: false, code: 'invalid_request' });
    expect((await c.recv({ max: 10 })).count).toBe(0);
  });

  it('refuses each item exactly as SEND would, with the same text and code', async () => {
    const { id } = await sink('batch-same');
    const targets = [{ to_name: 'nobody-at-all' }, {}, { to: 987_654 }, { to: 0 }, { to_name: 'batch-same' }];
    const batch = await op.call<{ results: Record<string, unknown>[] }>(Op.SEND_BATCH, {
      messages: targets.map((t) => ({ ...t, message: 1 })),
    });
    for (const [i, t] of targets.entries()) {
      const single = JSON.parse((await op.raw(Op.SEND, { ...t, message: 1 })).toString()) as Record<
        string,
        unknown
      >;
      if (single.success) expect(batch.results[i]).toEqual({ delivered_to: id });
      else expect(batch.results[i]).toEqual({ error: single.error, code: single.code });
    }
    expect(batch.results.map((x) => x.code ?? 'ok')).toEqual([
      'not_found',
      'invalid_request',
      'not_found',
      'invalid_request',
      'ok',
    ]);
  });

  it('with `results: "refused"` only refused items are answered for, with their index; a bad value is refused', async () => {
    const { c, id } = await sink('batch-refused');
    const r = await op.sendBatch(
      [
        { to: id, message: 1 },
        { to_name: 'nobody-refused', message: 2 },
        { to: id, message: 3 },
        { message: 4 },
      ],
      { results: 'refused' },
    );
    expect(r).toEqual({
      success: true,
      delivered_count: 2,
      failed_count: 2,
      results: [
        { index: 1, error: 'target agent not found: nobody-refused', code: 'not_found' },
        { index: 3, error: 'target agent required (to or to_name)', code: 'invalid_request' },
      ],
    });
    expect(await take(c, 2)).toEqual([1, 3]);
    const bad = await op.raw(Op.SEND_BATCH, { messages: [{ to: id, message: 5 }], results: 'some' });
    expect(JSON.parse(bad.toString())).toMatchObject({ success: false, code: 'invalid_request' });
    expect((await c.recv({ max: 10 })).count).toBe(0);
  });

  it("an agent's batch: delivered items count as sent, a refused item is audited and stops nothing", async () => {
    const me = (await op.hello()).agent_id;
    const { c: dest, id: destId } = await sink('batch-dest');
    // outbox_bytes 1024: an item of 2000 bytes is over the agent's budget whatever else is queued.
    const agent = await op.spawn({
      name: 'batch-agent',
      script: probe,
      env: { REPORT_TO: String(me) },
      budgets: { outbox_bytes: 1024 },
    });
    expect((await op.recv({ max: 1, timeoutMs: 10_000 })).count).toBe(1); // the probe is up
    const sentBefore = (await op.agentMetrics(agent.id)).metrics.kernel_stats.messages_sent;
    const messages = [
      { to: destId, message: 'a' },
      { to_name: 'nobody-batch', message: 'b' },
      { to: destId, message: 'x'.repeat(2000) },
      { to_name: 'batch-dest', message: 'd' },
    ];
    await op.send('batch-agent', { cmd: 'call', op: Op.SEND_BATCH, payload: { messages } });
    const answer = await op.recv({ max: 1, timeoutMs: 10_000 });
    const out = (answer.messages[0].message as { out: Record<string, unknown> }).out;
    expect(out).toMatchObject({
      success: true,
      delivered_count: 2,
      failed_count: 2,
      results: [
        { delivered_to: destId },
        { code: 'not_found' },
        { code: 'quota_exceeded' },
        { delivered_to: destId },
      ],
    });
    // The messages arrive from the agent, in order; the refused ones are not queued.
    const got = await dest.recv({ max: 10, timeoutMs: 10_000 });
    expect(got.messages.map((m) => [m.from, m.message])).toEqual([
      [agent.id, 'a'],
      [agent.id, 'd'],
    ]);
    // Two delivered items and the probe's answer.
    expect((await op.agentMetrics(agent.id)).metrics.kernel_stats.messages_sent).toBe(sentBefore + 2 + 1);
    const log = await op.getAuditLog({ category: 'RESOURCE', limit: 100 });
    const entry = (
      log.entries as { event_type: string; agent_id: number; details: Record<string, unknown> }[]
    )
      .filter((e) => e.agent_id === agent.id)
      .find((e) => e.details.syscall === 'SEND_BATCH');
    expect(entry).toMatchObject({
      event_type: 'QUOTA_EXCEEDED',
      details: { syscall: 'SEND_BATCH', item: 2, code: 'quota_exceeded', budget: 'outbox_bytes' },
    });
    // `results: "none"`: the refusal comes as SEND_REFUSED (the first frame on the probe's fresh
    // connection), and is audited as any other.
    await op.send('batch-agent', {
      cmd: 'raw',
      op: Op.SEND_BATCH,
      payload: { messages: [{ to: destId, message: 'y'.repeat(2000) }], results: 'none', ref: 9 },
    });
    const quiet = (await op.recv({ max: 1, timeoutMs: 10_000 })).messages[0].message as {
      out: { reply: Record<string, unknown> };
    };
    expect(quiet.out.reply).toMatchObject({
      ref: 9,
      success: true,
      delivered_count: 0,
      failed_count: 1,
      results: [{ index: 0, code: 'quota_exceeded' }],
    });
    await until(
      async () => {
        const l = await op.getAuditLog({ category: 'RESOURCE', limit: 100 });
        return (l.entries as { agent_id: number; details: Record<string, unknown> }[]).some(
          (e) => e.agent_id === agent.id && e.details.syscall === 'SEND_BATCH' && e.details.item === 0,
        );
      },
      10_000,
      "the quiet batch's refusal audited",
    );
    await op.kill('batch-agent', { grace_ms: 0 });
  }, 60_000);

  it('pipelined SENDs and SEND_BATCHes of one connection arrive in the order they were written', async () => {
    const { c, id } = await sink('batch-order');
    const calls: Promise<unknown>[] = [];
    let n = 0;
    for (let round = 0; round < 50; round++) {
      calls.push(op.send(id, n++));
      calls.push(
        op.sendBatch([
          { to: id, message: n++ },
          { toName: 'batch-order', message: n++ },
        ]),
      );
      calls.push(op.sendBatch([{ to_name: 'batch-order', message: n++ }]));
    }
    await Promise.all(calls);
    expect(await take(c, n)).toEqual(Array.from({ length: n }, (_, i) => i));
  });
});
