/**
 * The fast path's SEND / SEND_BATCH / RECV / BROADCAST / push (native/src/fast/ops.cc), served through
 * the store's test-only `serve()`: byte-exact messages, everything unusual or refused handed to
 * JavaScript with nothing queued, and replies equal, field by field, to what the TypeScript ipc handlers
 * give for the same state (the reference side runs the real handlers over a PostOffice).
 */
import { describe, expect, it } from 'vitest';
import type { NativeMailStore } from '../../native/index.js';
import { loadNative } from '../sandbox/native.js';
import { DEFAULT_BUDGETS, type Budgets } from '../core/budgets.js';
import { PostOffice, QueuedBytes, type Mail } from './mailboxes.js';
import ipcFamily from '../syscalls/ipc/index.js';
import type { Services, SyscallContext } from '../core/context.js';
import { checkDepth, parseObject, validateRequest } from '../core/validate.js';
import { decodePushBinary, encodePushBinary, MAGIC, Op } from '../../protocol/index.js';

const SEND = 0x20;
const RECV = 0x21;
const BROADCAST = 0x22;
const PUSH = 0x24;
const SEND_BATCH = 0x25;
const MAX_DEPTH = 64;

interface Frame {
  agentId: number;
  opcode: number;
  payload: Buffer;
}

/** Splits the frames the fast path wrote (17-byte header: magic, agent id, opcode, u64 size). */
function frames(buf: Buffer): Frame[] {
  const out: Frame[] = [];
  let at = 0;
  while (at < buf.length) {
    expect(buf.readUInt32LE(at)).toBe(MAGIC);
    const size = Number(buf.readBigUInt64LE(at + 9));
    out.push({
      agentId: buf.readUInt32LE(at + 4),
      opcode: buf[at + 8],
      payload: buf.subarray(at + 17, at + 17 + size),
    });
    at += 17 + size;
  }
  return out;
}

/** The one reply frame of a served call, parsed. */
function reply(out: Buffer, caller: number, opcode: number): Record<string, unknown> {
  const fs = frames(out);
  expect(fs.length).toBe(1);
  expect(fs[0].agentId).toBe(caller);
  expect(fs[0].opcode).toBe(opcode);
  return JSON.parse(fs[0].payload.toString()) as Record<string, unknown>;
}

/** age_ms differs by when each side ran: checked for shape, then left out of the comparison. */
function ageless(r: Record<string, unknown>): Record<string, unknown> {
  const strip = (m: Record<string, unknown>) => {
    expect(Number.isInteger(m.age_ms) && (m.age_ms as number) >= 0).toBe(true);
    const { age_ms: _age, ...rest } = m;
    return rest;
  };
  return Array.isArray(r.messages)
    ? { ...r, messages: (r.messages as Record<string, unknown>[]).map(strip) }
    : r;
}

interface World {
  /** The native store served by `serve()`. */
  store: NativeMailStore;
  /** The reference: the TypeScript handlers over a PostOffice in the same state. */
  ts: {
    mail: Mail;
    call(
      op: 'SEND' | 'RECV' | 'BROADCAST',
      caller: number,
      payload: string,
      signal?: AbortSignal,
    ): Promise<unknown>;
  };
  serve(
    caller: number,
    opcode: number,
    payload: string | Buffer,
    holder?: number,
  ): ReturnType<NativeMailStore['serve']>;
  /** Makes `id` gone for both sides (a stopped agent). */
  unreachable(id: number): void;
}

/**
 * Ids 1..4 named a1..a4 and reachable, every id with `budgets`; `limit` the kernel's queued bytes.
 * The same on both sides.
 */
function world(
  o: { budgets?: Partial<Budgets>; limit?: number; maxReplyBytes?: number; ids?: number[] } = {},
): World {
  const budgets: Budgets = { ...DEFAULT_BUDGETS, ...o.budgets };
  const ids = o.ids ?? [1, 2, 3, 4];
  const limit = o.limit ?? 1 << 30;
  const maxReplyBytes = o.maxReplyBytes ?? 8 << 20;
  const store = new (loadNative().MailStore)({ queuedBytesLimit: limit, maxReplyBytes, maxDepth: MAX_DEPTH });
  const mail = new PostOffice(() => budgets, new QueuedBytes(limit));
  for (const id of ids) {
    store.setBudgets(id, {
      mailboxMessages: budgets.mailbox_messages,
      mailboxBytes: budgets.mailbox_bytes,
      outboxBytes: budgets.outbox_bytes,
    });
    store.setReachable(id, true);
    expect(store.register(id, `a${id}`, -1)).toBe('');
    mail.register(id, `a${id}`);
  }
  const gone = new Set<number>();
  const stats = new Map<number, { sent: number; received: number }>();
  const services = {
    mail,
    kernel: { maxReplyBytes, maxDepth: MAX_DEPTH },
    agents: { get: () => undefined, mayRegister: () => undefined },
    principals: {
      isClient: (id: number) => ids.includes(id) && !gone.has(id),
      budgets: () => budgets,
      stats: (id: number) => {
        let s = stats.get(id);
        if (!s) stats.set(id, (s = { sent: 0, received: 0 }));
        return s;
      },
    },
  } as unknown as Services;
  const family = ipcFamily({ services, observe: () => undefined });
  return {
    store,
    ts: {
      mail,
      async call(op, caller, payload, signal = new AbortController().signal) {
        const buf = Buffer.from(payload);
        checkDepth(buf, MAX_DEPTH);
        const req = parseObject(buf);
        validateRequest(op, req);
        const ctx = {
          caller: { id: caller },
          services,
          signal,
          park: async () => undefined,
          onClose: () => undefined,
        } as unknown as SyscallContext;
        const r = await (family.handlers[op] as (c: SyscallContext, r: unknown) => unknown)(ctx, req);
        return Buffer.isBuffer(r) ? JSON.parse(r.toString()) : JSON.parse(JSON.stringify(r));
      },
    },
    unreachable(id) {
      gone.add(id);
      store.setReachable(id, false);
    },
    serve: (caller, opcode, payload, holder = 1000 + caller) =>
      store.serve(caller, holder, opcode, Buffer.isBuffer(payload) ? payload : Buffer.from(payload)),
  };
}

/** Serves on both sides and expects the same reply. */
async function same(w: World, op: 'SEND' | 'RECV' | 'BROADCAST', caller: number, payload: string) {
  const code = { SEND, RECV, BROADCAST }[op];
  const r = w.serve(caller, code, payload);
  expect(r.verdict).toBe('done');
  const native = reply(r.out, caller, code);
  const ts = (await w.ts.call(op, caller, payload)) as Record<string, unknown>;
  expect(ageless(native)).toEqual(ageless(ts));
  return native;
}

/** Message texts kept byte for byte (what a sender wrote, not what JSON.stringify would write). */
const EXACT = [
  '{"hello":"world"}',
  '{ "spaced" : [ 1 , 2 ] ,"x":{}}',
  '"h\\u00e9llo \\ud83d\\ude00 \u00e9\u4e2d\ud83d\ude00 \\n\\t\\"\\\\\\/"',
  '[1,[2,[3,[4,[5,{"deep":[[[[]]]]}]]]]]',
  '12345678901234567890',
  '-0.0e+00',
  '1.7976931348623157e308',
  '[true,false,null,0,-1,3.14159265358979323846264338327950288]',
  'null',
  '""',
  JSON.stringify({ pad: 'k'.repeat(1000) }),
  JSON.stringify({ big: 'q'.repeat(64 * 1024), n: [1, 2, 3] }),
];

describe('fast path ops (MailStore.serve)', () => {
  it('SEND by id and by name: the TypeScript reply, the message queued byte for byte', async () => {
    for (const text of EXACT) {
      const w = world();
      await same(w, 'SEND', 1, `{"to":2,"message":${text}}`);
      await same(w, 'SEND', 1, `{"to_name":"a3","message":${text}}  `);
      // `to` wins over `to_name`; `to: 0` is absent.
      await same(w, 'SEND', 1, `{"to_name":"a3","to":4,"message":${text}}`);
      await same(w, 'SEND', 1, `{"to":0,"to_name":"a4","message":${text},"extra":{"ignored":[1]}}`);
      for (const [id, n] of [
        [2, 1],
        [3, 1],
        [4, 2],
      ]) {
        const got = w.store.take(id, 10, 1, false, Number.POSITIVE_INFINITY);
        expect(got.length).toBe(n);
        for (const m of got) {
          expect(m.json).toBe(text);
          expect(m).toMatchObject({ from: 1, fromName: 'a1', bytes: Buffer.byteLength(text) });
        }
      }
    }
  });

  it('SEND without a message queues {} as the TypeScript handler does', async () => {
    const w = world();
    await same(w, 'SEND', 1, '{"to":2}');
    expect(w.store.take(2, 1, 1, false, 1e9)[0].json).toBe('{}');
    expect(w.ts.mail.take(2, 1, {})[0].json).toBe('{}');
  });

  it('anything not in the plain shape goes to JavaScript, with nothing queued', () => {
    const w = world();
    const bad = [
      '',
      '[]',
      '"x"',
      '{"to":2,"message":{"a":1}',
      '{"to":2,"message":1} x',
      '{"to":2,"message":tru}',
      '{"to":2,"message":"\\ud800"}',
      '{"to":2,"message":1e400}',
      '{"to":2,"message":123456789012345678901234567890}',
      '{"to":2,"message":[1,]}',
      '{"to":2,"to":3}',
      '{"to":2,"message":1,"message":2}',
      '{"to":-1}',
      '{"to":2.5}',
      '{"to":"2"}',
      '{"to":4294967296}',
      '{"to":null,"to_name":"a2"}',
      '{"to_name":2}',
      '{"to":2,"to_name":null}',
      '{"to":2,"junk":[1,}',
      `{"to":2,"message":${'['.repeat(MAX_DEPTH)}${']'.repeat(MAX_DEPTH)}}`,
    ];
    for (const p of bad) {
      const r = w.serve(1, SEND, p);
      expect([p, r.verdict]).toEqual([p, 'tojs']);
      expect(r.out.length).toBe(0);
    }
    const invalidUtf8 = Buffer.concat([
      Buffer.from('{"to":2,"message":"'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"}'),
    ]);
    expect(w.serve(1, SEND, invalidUtf8).verdict).toBe('tojs');
    // The deepest message the kernel accepts is served: the envelope is one level.
    expect(
      w.serve(1, SEND, `{"to":2,"message":${'['.repeat(MAX_DEPTH - 1)}${']'.repeat(MAX_DEPTH - 1)}}`).verdict,
    ).toBe('done');
    expect(w.store.size(2)).toBe(1);
    expect(w.store.stats(1).syscalls).toBe(1);
    // Other opcodes are never served here.
    expect(w.serve(1, 0x01, '{}').verdict).toBe('tojs');
    expect(w.serve(1, PUSH, '{}').verdict).toBe('tojs');
  });

  it('refusals go to JavaScript with nothing queued: full mailbox, outbox, kernel bytes, budgets, reachability, names', () => {
    const w = world({
      budgets: { mailbox_messages: 1, outbox_bytes: 100 },
      limit: 150,
      ids: [1, 2, 3, 4, 5],
    });
    expect(w.serve(1, SEND, '{"to":2,"message":1}').verdict).toBe('done');
    // mailbox of 2 holds its one message
    expect(w.serve(1, SEND, '{"to":2,"message":1}').verdict).toBe('tojs');
    // outbox: 1 byte queued of 100
    expect(w.serve(1, SEND, `{"to":3,"message":"${'x'.repeat(98)}"}`).verdict).toBe('tojs');
    // kernel bytes: 1 + 80 + 80 > 150
    expect(w.serve(4, SEND, `{"to":3,"message":"${'x'.repeat(78)}"}`).verdict).toBe('done');
    expect(w.serve(5, SEND, `{"to":1,"message":"${'x'.repeat(78)}"}`).verdict).toBe('tojs');
    // no budgets, unreachable, unknown names, no target
    expect(w.serve(1, SEND, '{"to":99,"message":1}').verdict).toBe('tojs');
    expect(w.serve(99, SEND, '{"to":4,"message":1}').verdict).toBe('tojs');
    w.unreachable(4);
    expect(w.serve(1, SEND, '{"to":4,"message":1}').verdict).toBe('tojs');
    expect(w.serve(1, SEND, '{"to_name":"nobody","message":1}').verdict).toBe('tojs');
    expect(w.serve(1, SEND, '{"to_name":"","message":1}').verdict).toBe('tojs');
    expect(w.serve(1, SEND, '{"message":1}').verdict).toBe('tojs');
    expect(w.serve(1, SEND, '{"to":0}').verdict).toBe('tojs');
    expect([w.store.size(1), w.store.size(2), w.store.size(3), w.store.size(4)]).toEqual([0, 1, 1, 0]);
    expect(w.store.queuedBytes()).toBe(81);
    expect(w.store.stats(1)).toMatchObject({ syscalls: 1, sent: 1 });
  });

  it('SEND_BATCH: every item delivered, or the whole frame goes to JavaScript', () => {
    const w = world({ budgets: { mailbox_messages: 3 } });
    const r = w.serve(
      1,
      SEND_BATCH,
      '{"messages":[{"to":2,"message":"a"},{"to_name":"a3","message":{"b":[1]}},{"to":2}]}',
    );
    expect(r.verdict).toBe('done');
    expect(reply(r.out, 1, SEND_BATCH)).toEqual({
      success: true,
      delivered_count: 3,
      failed_count: 0,
      results: [{ delivered_to: 2 }, { delivered_to: 3 }, { delivered_to: 2 }],
    });
    expect(w.store.take(2, 10, 5, false, 1e9).map((m) => m.json)).toEqual(['"a"', '{}']);
    expect(w.store.take(3, 10, 5, false, 1e9).map((m) => [m.json, m.seq])).toEqual([['{"b":[1]}', 2]]);
    // Three fit in 4's mailbox of 3, the fourth does not: nothing is queued.
    const four = JSON.stringify({ messages: [1, 2, 3, 4].map((n) => ({ to: 4, message: n })) });
    expect(w.serve(1, SEND_BATCH, four).verdict).toBe('tojs');
    expect(w.store.size(4)).toBe(0);
    // One unknown target refuses the frame.
    expect(
      w.serve(1, SEND_BATCH, '{"messages":[{"to":4,"message":1},{"to_name":"zz","message":2}]}').verdict,
    ).toBe('tojs');
    expect(w.store.size(4)).toBe(0);
    for (const p of [
      '{"messages":[]}',
      '{}',
      '{"messages":{}}',
      '{"messages":[1]}',
      '{"messages":[{"to":4}],"messages":[{"to":4}]}',
      JSON.stringify({ messages: Array.from({ length: 4097 }, () => ({ to: 4 })) }),
    ])
      expect(w.serve(1, SEND_BATCH, p).verdict).toBe('tojs');
    const max = JSON.stringify({
      messages: Array.from({ length: 4096 }, (_, i) => ({ to: 1 + (i % 3), message: i })),
    });
    const big = world({ budgets: { mailbox_messages: 5000 } });
    expect(big.serve(4, SEND_BATCH, max).verdict).toBe('done');
    expect(big.store.size(1) + big.store.size(2) + big.store.size(3)).toBe(4096);
    expect(big.store.stats(4)).toMatchObject({ syscalls: 1, sent: 4096 });
    expect(w.store.stats(1)).toMatchObject({ syscalls: 1, sent: 3 });
  });

  it('SEND_BATCH with `results: "refused"`: no result per delivered item; another value goes to JavaScript', () => {
    const w = world();
    const r = w.serve(1, SEND_BATCH, '{"results":"refused","messages":[{"to":2,"message":"a"},{"to":3}]}');
    expect(r.verdict).toBe('done');
    expect(reply(r.out, 1, SEND_BATCH)).toEqual({
      success: true,
      delivered_count: 2,
      failed_count: 0,
      results: [],
    });
    const all = w.serve(1, SEND_BATCH, '{"messages":[{"to":2,"message":"b"}],"results":"all"}');
    expect(reply(all.out, 1, SEND_BATCH)).toMatchObject({ results: [{ delivered_to: 2 }] });
    expect(w.store.take(2, 10, 5, false, 1e9).map((m) => m.json)).toEqual(['"a"', '"b"']);
    for (const p of [
      '{"results":"some","messages":[{"to":2}]}',
      '{"results":1,"messages":[{"to":2}]}',
      '{"results":"refused","results":"all","messages":[{"to":2}]}',
    ])
      expect(w.serve(1, SEND_BATCH, p).verdict).toBe('tojs');
    expect(w.store.size(2)).toBe(0);
  });

  it('BROADCAST: the TypeScript reply; the caller only with include_self; unreachable ones skipped; a refusal goes to JavaScript', async () => {
    const w = world();
    w.unreachable(3);
    await same(w, 'BROADCAST', 1, '{"message":{"all":true}}');
    await same(w, 'BROADCAST', 1, '{"message":"me too","include_self":true}');
    expect(w.store.take(2, 10, 9, false, 1e9).map((m) => m.json)).toEqual(['{"all":true}', '"me too"']);
    expect(w.store.size(1)).toBe(1);
    expect(w.store.size(3)).toBe(0);
    const full = world({ budgets: { mailbox_messages: 1 } });
    expect(full.serve(1, BROADCAST, '{"message":1}').verdict).toBe('done');
    expect(full.serve(1, BROADCAST, '{"message":2}').verdict).toBe('tojs');
    expect([2, 3, 4].map((id) => full.store.size(id))).toEqual([1, 1, 1]);
    expect(full.serve(1, BROADCAST, '{"include_self":1}').verdict).toBe('tojs');
  });

  it('RECV: the TypeScript reply for max, defaults and the byte bound; from_name escaped', async () => {
    const w = world({ maxReplyBytes: 300 });
    for (let i = 0; i < 15; i++) {
      const text = JSON.stringify({ i, pad: 'p'.repeat(40) });
      expect(w.serve(3, SEND, `{"to":1,"message":${text}}`).verdict).toBe('done');
      w.ts.mail.deliver(1, 3, 'a3', text);
    }
    let r = await same(w, 'RECV', 1, '{"max":2}');
    expect(r.count).toBe(2);
    r = await same(w, 'RECV', 1, '{}');
    // 300 bytes of ~60-byte messages: 5, though the default max is 10
    expect(r.count).toBe(5);
    r = await same(w, 'RECV', 1, '{"max":0}');
    expect(r.count).toBe(0);
    r = await same(w, 'RECV', 1, '{"max":10000,"lease":false,"wait":false,"timeout_ms":0}');
    expect(r.count).toBe(5);
    expect((r.messages as { seq: number }[]).map((m) => m.seq)).toEqual([8, 9, 10, 11, 12]);
    // The kernel's own messages carry their own from_name, escaped as JSON.stringify does.
    w.store.setBudgets(0, { mailboxMessages: 10, mailboxBytes: 1e6, outboxBytes: 1e9 });
    const name = 'k "quoted" \\ \n\t\u0001 é';
    w.store.deliver(2, 0, '{"task":1}', name);
    const got = reply(w.serve(2, RECV, '{}').out, 2, RECV);
    expect((got.messages as { from_name: string }[])[0].from_name).toBe(name);
    for (const p of [
      '{"max":10001}',
      '{"max":-1}',
      '{"max":"1"}',
      '{"timeout_ms":300001}',
      '{"wait":1}',
      '{"lease":null}',
      '{"max":1,"max":2}',
    ])
      expect(w.serve(1, RECV, p).verdict).toBe('tojs');
    expect(w.store.stats(1)).toMatchObject({ syscalls: 4, received: 12 });
  });

  it('RECV lease: kept until the holder takes again, requeued at the head when it goes away', () => {
    const w = world();
    for (const m of ['"a"', '"b"', '"c"']) w.serve(2, SEND, `{"to":1,"message":${m}}`);
    const r = w.serve(1, RECV, '{"max":2,"lease":true}', 77);
    expect((reply(r.out, 1, RECV).messages as { message: string }[]).map((m) => m.message)).toEqual([
      'a',
      'b',
    ]);
    expect(w.store.bytes(1)).toBe(9);
    expect(w.store.requeueLeases(1, 77)).toBe(2);
    const again = reply(w.serve(1, RECV, '{"lease":true}', 78).out, 1, RECV);
    expect((again.messages as { message: string }[]).map((m) => m.message)).toEqual(['a', 'b', 'c']);
    // 78's next take acknowledges: the bytes come free.
    reply(w.serve(1, RECV, '{"lease":true}', 78).out, 1, RECV);
    expect(w.store.bytes(1)).toBe(0);
    expect(w.store.queuedBytes()).toBe(0);
  });

  it('RECV wait parks on an empty mailbox; Resume answers when mail comes or time is up', () => {
    const w = world();
    const r = w.serve(1, RECV, '{"wait":true,"timeout_ms":5000,"max":3,"lease":true}', 55);
    expect(r.verdict).toBe('park');
    expect(r.out.length).toBe(0);
    expect(r.park).toMatchObject({ id: 1, holder: 55, max: 3, lease: true });
    expect(r.park!.timeoutMs).toBeGreaterThan(0);
    expect(r.park!.timeoutMs).toBeLessThanOrEqual(5000);
    expect(w.store.resume(r.park!, false)).toBeNull();
    w.serve(2, SEND, '{"to":1,"message":"late"}');
    const done = reply(w.store.resume(r.park!, false)!, 1, RECV);
    expect(done).toMatchObject({
      success: true,
      count: 1,
      messages: [{ from: 2, from_name: 'a2', message: 'late', seq: 1 }],
    });
    const timed = reply(w.store.resume(r.park!, true)!, 1, RECV);
    expect(timed).toEqual({ success: true, messages: [], count: 0 });
    // wait with max 0, or with mail queued, is answered at once.
    expect(w.serve(1, RECV, '{"wait":true,"max":0}').verdict).toBe('done');
    w.serve(2, SEND, '{"to":1,"message":"now"}');
    expect(w.serve(1, RECV, '{"wait":true}').verdict).toBe('done');
  });

  it('push: one PUSH frame per message, RECV fields with kind first, as kernel/ipc/push.ts writes them', () => {
    const w = world();
    for (const m of ['{"n":1}', '[2]', '"three"']) w.serve(2, SEND, `{"to":1,"message":${m}}`);
    const fs = frames(w.store.pushMessages(1, 5, 2));
    expect(fs.map((f) => [f.agentId, f.opcode])).toEqual([
      [1, PUSH],
      [1, PUSH],
    ]);
    const texts = fs.map((f) => f.payload.toString());
    expect(texts[0]).toMatch(
      /^\{"kind":"message","from":2,"from_name":"a2","message":\{"n":1\},"age_ms":\d+,"seq":1\}$/,
    );
    expect(JSON.parse(texts[1])).toMatchObject({ kind: 'message', from: 2, message: [2], seq: 2 });
    expect(w.store.size(1)).toBe(1);
    expect(w.store.stats(1)).toMatchObject({ syscalls: 0, received: 2, lastActiveMs: 0 });
    expect(frames(w.store.pushMessages(1, 5, 64)).length).toBe(1);
    expect(w.store.pushMessages(1, 5, 64).length).toBe(0);
  });

  it('push batch: one PUSH frame for what was taken, RECV items under "messages", as push.ts writes it', () => {
    const w = world();
    for (const m of ['{"n":1}', '[2]', '"three"']) w.serve(2, SEND, `{"to":1,"message":${m}}`);
    const fs = frames(w.store.pushMessages(1, 5, 2, true));
    expect(fs.map((f) => [f.agentId, f.opcode])).toEqual([[1, PUSH]]);
    const text = fs[0]!.payload.toString();
    expect(text).toMatch(
      /^\{"kind":"messages","messages":\[\{"from":2,"from_name":"a2","message":\{"n":1\},"age_ms":\d+,"seq":1\},\{"from":2,"from_name":"a2","message":\[2\],"age_ms":\d+,"seq":2\}\],"count":2\}$/,
    );
    expect(w.store.size(1)).toBe(1);
    expect(w.store.stats(1)).toMatchObject({ syscalls: 0, received: 2 });
    expect(JSON.parse(frames(w.store.pushMessages(1, 5, 64, true))[0]!.payload.toString())).toMatchObject({
      kind: 'messages',
      messages: [{ message: 'three', seq: 3 }],
      count: 1,
    });
    expect(w.store.pushMessages(1, 5, 64, true).length).toBe(0);
  });

  it('push binary: PUSH_BINARY frames, one per message or one for all, the bytes push-binary.ts writes', () => {
    const w = world();
    for (const m of ['{"n":1}', '[2]', '"thrée"']) w.serve(2, SEND, `{"to":1,"message":${m}}`);
    const one = frames(w.store.pushMessages(1, 5, 1, false, undefined, true));
    expect(one.map((f) => [f.agentId, f.opcode])).toEqual([[1, Op.PUSH_BINARY]]);
    const [m1] = decodePushBinary(one[0]!.payload);
    expect({ from: m1!.from, from_name: m1!.from_name, seq: m1!.seq, bytes: m1!.bytes.toString() }).toEqual({
      from: 2,
      from_name: 'a2',
      seq: 1,
      bytes: '{"n":1}',
    });
    // The same bytes as the TypeScript path's encoder for the same message.
    expect(one[0]!.payload).toEqual(
      encodePushBinary([{ from: 2, from_name: 'a2', age_ms: m1!.age_ms, seq: 1, json: '{"n":1}' }]),
    );
    const all = frames(w.store.pushMessages(1, 5, 64, true, undefined, true));
    expect(all.length).toBe(1);
    expect(decodePushBinary(all[0]!.payload).map((m) => [m.bytes.toString(), m.seq])).toEqual([
      ['[2]', 2],
      ['"thrée"', 3],
    ]);
    expect(w.store.size(1)).toBe(0);
    expect(w.store.stats(1)).toMatchObject({ syscalls: 0, received: 3 });
  });

  it('push batch: a frame holds at most maxBytes of message text, and always at least one message', () => {
    const w = world();
    for (const m of ['"aaaa"', '"bbbb"', '"cccc"', '"dddddddddddd"'])
      w.serve(2, SEND, `{"to":1,"message":${m}}`);
    const taken = (maxBytes: number) =>
      frames(w.store.pushMessages(1, 5, 64, true, maxBytes)).flatMap(
        (f) => (JSON.parse(f.payload.toString()) as { messages: { message: string }[] }).messages,
      );
    // Six bytes each ("aaaa" with its quotes): two fit in 13, the third would not.
    expect(taken(13).map((m) => m.message)).toEqual(['aaaa', 'bbbb']);
    expect(taken(13).map((m) => m.message)).toEqual(['cccc']);
    // Over the limit alone: still pushed, alone.
    expect(taken(1).map((m) => m.message)).toEqual(['dddddddddddd']);
    expect(w.store.size(1)).toBe(0);
  });

  it('counts what it completes: syscalls, sent, received, last activity', () => {
    const w = world();
    const before = Date.now();
    w.serve(1, SEND, '{"to":2,"message":1}');
    w.serve(1, BROADCAST, '{"message":2}');
    w.serve(2, RECV, '{}');
    w.serve(1, SEND, '{"to":999}');
    expect(w.store.stats(1)).toMatchObject({ syscalls: 2, sent: 4, received: 0 });
    expect(w.store.stats(2)).toMatchObject({ syscalls: 1, sent: 0, received: 2 });
    expect(w.store.stats(1).lastActiveMs).toBeGreaterThanOrEqual(before);
    expect(w.store.stats(3)).toEqual({ syscalls: 0, sent: 0, received: 0, lastActiveMs: 0 });
  });
});
