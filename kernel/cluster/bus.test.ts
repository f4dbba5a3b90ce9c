/**
 * JetStreamBus against a real nats-server -js (harness/services.ts): mail by name between nodes, waiting
 * mail, hand-over to a new owner, backpressure, de-duplication, events, broadcasts, calls, stream limits,
 * and a NATS restart on the same store.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { connect, JSONCodec } from 'nats';
import { startNats, freePort, type ServiceProcess } from '../../harness/services.js';
import { until } from '../../harness/kernel.js';
import { JetStreamBus, nameToken, natsServers } from './bus.js';
import {
  BusAuthError,
  BusClosedError,
  BusConfigError,
  BusUnreachableError,
  MailRejectedError,
  MailTooLargeError,
  MailUnconfirmedError,
  NodeUnreachableError,
  RemoteCallError,
} from './bus-errors.js';
import type { ClusterOptions, MailOptions, RemoteBroadcast, RemoteEvent, RemoteMessage } from './types.js';

const log = pino({ level: process.env.CLOVE_TEST_LOG ?? 'silent' });
let nats: ServiceProcess;
const buses: JetStreamBus[] = [];
let prefixSeq = 0;

beforeAll(async () => {
  nats = await startNats();
});
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.close()));
});
afterAll(async () => {
  await nats?.stop();
});

/** A bus for `node`; every test uses its own prefix (its own stream and subjects) on the shared server. */
async function bus(
  node: string,
  prefix: string,
  mail: Partial<MailOptions> = {},
  url = nats.url,
  beforeStart?: (b: JetStreamBus) => void,
): Promise<JetStreamBus> {
  const opts: ClusterOptions = {
    etcd: [],
    nats: [url],
    node,
    advertise: '127.0.0.1:0',
    leaseTtlS: 10,
    prefix,
    mail: { ackWaitS: 5, ...mail },
  };
  const b = new JetStreamBus(opts, { log });
  buses.push(b);
  beforeStart?.(b);
  await b.start();
  return b;
}

function freshPrefix(): string {
  return `t${process.pid}_${++prefixSeq}`;
}

function mail(to: string, message: string, over: Partial<RemoteMessage> = {}): RemoteMessage {
  return {
    to,
    from: 1048577,
    fromName: 'sender',
    fromNode: 'a',
    message,
    msgId: randomUUID(),
    sentAt: Date.now(),
    ...over,
  };
}

/** JSON text a JSON.parse/stringify round trip would change: escapes, unicode, big numbers, spacing. */
const ODD =
  '{"text":"h\\u00e9llo \\ud83d\\ude00 \\"q\\" \\\\ \\n","big":123456789012345678901234567890,' +
  '"f":1.0e+3, "nested":{"a":[1,[2,[3,{"b":null}]]],"e":{}} ,"s":"日本語","zero":-0}';

async function streamMessages(prefix: string): Promise<number> {
  const nc = await connect({ servers: nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    return (await jsm.streams.info(`${prefix.toUpperCase()}_MAIL`)).state.messages;
  } finally {
    await nc.close();
  }
}

describe('JetStreamBus mail', () => {
  it('delivers mail to the node owning the name, byte for byte, and acknowledges it', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    const b = await bus('b', p);
    const got: RemoteMessage[] = [];
    await b.own('w', (m) => (got.push(m), true));
    const sent = mail('w', ODD);
    await a.send(sent);
    await until(() => got.length === 1, 20_000, 'b to get the mail');
    expect(got[0]).toEqual(sent);
    expect(got[0].message).toBe(ODD);
    expect(Buffer.from(got[0].message)).toEqual(Buffer.from(ODD));
    // Acknowledged: the work-queue stream removes it.
    await until(async () => (await streamMessages(p)) === 0, 20_000, 'the stream to drop the acked mail');
  });

  it('keeps mail sent before anyone owns the name and delivers it to the first owner', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    const b = await bus('b', p);
    const sent = [mail('w', '"one"'), mail('w', '"two"'), mail('w', '{"three":3}')];
    for (const m of sent) await a.send(m);
    expect(await streamMessages(p)).toBe(3);
    const got: RemoteMessage[] = [];
    await b.own('w', (m) => (got.push(m), true));
    await until(() => got.length === 3, 20_000, 'the waiting mail');
    expect(got.map((m) => m.message)).toEqual(['"one"', '"two"', '{"three":3}']);
  });

  it('hands mail a disowning owner did not take to the next owner, with nothing lost', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    const b = await bus('b', p);
    const seenByB: string[] = [];
    // b's mailbox is full: it never takes anything.
    await b.own('w', (m) => (seenByB.push(m.msgId), false));
    const sent = Array.from({ length: 5 }, (_, i) => mail('w', JSON.stringify({ i })));
    for (const m of sent) await a.send(m);
    await until(() => new Set(seenByB).size === 5, 20_000, 'b to be offered every message');
    await b.disown('w');
    await b.close();
    const c = await bus('c', p);
    const got: RemoteMessage[] = [];
    await c.own('w', (m) => (got.push(m), true));
    await until(() => got.length === 5, 30_000, 'c to get the 5 pending messages');
    expect(got.map((m) => m.msgId).sort()).toEqual(sent.map((m) => m.msgId).sort());
  });

  it('redelivers to the next owner mail that a dying node took but never acknowledged', async () => {
    const p = freshPrefix();
    const a = await bus('a', p, { ackWaitS: 2 });
    const b = await bus('b', p, { ackWaitS: 2 });
    const sent = mail('w', '"last words"');
    let bTook = 0;
    await b.own('w', () => {
      bTook++;
      // The node dies between putting the mail in its mailbox and acknowledging it.
      void (b as unknown as { nc: { close(): Promise<void> } }).nc.close();
      return true;
    });
    await a.send(sent);
    await until(() => bTook === 1, 20_000, 'b to take the mail');
    const c = await bus('c', p, { ackWaitS: 2 });
    const got: RemoteMessage[] = [];
    await c.own('w', (m) => (got.push(m), true));
    await until(() => got.length === 1, 30_000, 'c to get the unacknowledged mail');
    expect(got[0].msgId).toBe(sent.msgId);
  });

  it('redelivers mail refused by a full mailbox and acknowledges it once taken', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    const b = await bus('b', p);
    let offers = 0;
    const taken: RemoteMessage[] = [];
    await b.own('w', (m) => {
      offers++;
      if (offers < 4) return false;
      taken.push(m);
      return true;
    });
    await a.send(mail('w', '"patience"'));
    await until(() => taken.length === 1, 20_000, 'the mail to be taken on a later offer');
    expect(offers).toBe(4);
    await until(async () => (await streamMessages(p)) === 0, 20_000, 'the ack');
    expect(taken[0].message).toBe('"patience"');
  });

  it('nak-s mail whose delivery throws and delivers it again', async () => {
    const p = freshPrefix();
    const a = await bus('a', p, { fullRetryMs: 50 });
    const b = await bus('b', p, { fullRetryMs: 50 });
    let calls = 0;
    const taken: string[] = [];
    await b.own('w', (m) => {
      if (++calls === 1) throw new Error('mailbox exploded');
      taken.push(m.message);
      return true;
    });
    await a.send(mail('w', '"again"'));
    await until(() => taken.length === 1, 20_000, 'the second delivery');
    expect(taken).toEqual(['"again"']);
  });

  it('delivers one msgId once: JetStream drops a second publish, the owner drops a redelivered copy', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    const b = await bus('b', p);
    const got: RemoteMessage[] = [];
    await b.own('w', (m) => (got.push(m), true));
    const m1 = mail('w', '"once"');
    await a.send(m1);
    await a.send(m1);
    // A copy past JetStream's de-duplication (published without Nats-Msg-Id): the owner's recent ids drop it.
    const nc = await connect({ servers: nats.url });
    await nc.jetstream().publish(`${p}.mail.${nameToken('w')}`, JSONCodec().encode(m1));
    await nc.close();
    const m2 = mail('w', '"after"');
    await a.send(m2);
    await until(() => got.some((m) => m.msgId === m2.msgId), 20_000, 'the later message');
    await until(async () => (await streamMessages(p)) === 0, 20_000, 'every copy acknowledged');
    expect(got.map((m) => m.message)).toEqual(['"once"', '"after"']);
  });

  it('keeps names apart, including names that are not subject-safe', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    const b = await bus('b', p);
    const got = new Map<string, string[]>();
    for (const name of ['w.1', 'w:*', 'W']) {
      got.set(name, []);
      await b.own(name, (m) => (got.get(name)!.push(m.message), true));
    }
    for (const name of ['w.1', 'w:*', 'W']) await a.send(mail(name, JSON.stringify(name)));
    await until(() => [...got.values()].every((v) => v.length === 1), 20_000, 'each name its mail');
    for (const [name, v] of got) expect(v).toEqual([JSON.stringify(name)]);
  });

  it('refuses mail over the stream limits with MailRejectedError and MailTooLargeError', async () => {
    const p = freshPrefix();
    const a = await bus('a', p, { maxPendingPerName: 2 });
    await a.send(mail('w', '1'));
    await a.send(mail('w', '2'));
    const err = await a.send(mail('w', '3')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MailRejectedError);
    expect((err as MailRejectedError).message).toMatch(/"w".*maximum messages per subject/);
    expect(await streamMessages(p)).toBe(2);
    // Another name is not affected.
    await a.send(mail('v', '1'));
    // Beyond the server's max_payload (startNats: 8 MiB).
    const big = await a.send(mail('v', JSON.stringify('x'.repeat(9 * 1024 * 1024)))).catch((e: unknown) => e);
    expect(big).toBeInstanceOf(MailTooLargeError);
    expect((big as Error).message).toMatch(/"v".*at most 8388608/);
  });

  it('brings the stream and a consumer to the limits of the kernel that starts later', async () => {
    const p = freshPrefix();
    const a = await bus('a', p, { maxPendingPerName: 1, ackWaitS: 2 });
    await a.own('w', () => false); // made with a's ack wait
    await a.disown('w');
    await a.send(mail('v', '1'));
    await expect(a.send(mail('v', '2'))).rejects.toBeInstanceOf(MailRejectedError);
    const b = await bus('b', p, { maxPendingPerName: 3, ackWaitS: 7 });
    await a.send(mail('v', '2'));
    const got: string[] = [];
    await b.own('w', (m) => (got.push(m.message), true));
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await nc.jetstreamManager();
      const si = await jsm.streams.info(`${p.toUpperCase()}_MAIL`);
      expect(si.config.max_msgs_per_subject).toBe(3);
      const ci = await jsm.consumers.info(`${p.toUpperCase()}_MAIL`, `mail_${nameToken('w')}`);
      expect(ci.config.ack_wait).toBe(7e9);
    } finally {
      await nc.close();
    }
    await a.send(mail('w', '"still flows"'));
    await until(() => got.length === 1, 20_000, 'mail on the updated consumer');
  });

  it('carries a message as large as a kernel frame, full of characters JSON escapes', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    const b = await bus('b', p);
    const got: RemoteMessage[] = [];
    await b.own('w', (m) => (got.push(m), true));
    const text = JSON.stringify({ q: '"\\'.repeat(340_000) });
    expect(text.length).toBeGreaterThan(1_000_000);
    await a.send(mail('w', text));
    await until(() => got.length === 1, 30_000, 'the large message');
    expect(got[0].message === text).toBe(true);
  });

  it('shares one name between two nodes owning it at once (a partition): each message goes to one of them', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    const b = await bus('b', p);
    const c = await bus('c', p);
    const got: string[] = [];
    await b.own('w', (m) => (got.push(m.msgId), true));
    await c.own('w', (m) => (got.push(m.msgId), true));
    const sent = Array.from({ length: 40 }, (_, i) => mail('w', String(i)));
    for (const m of sent) await a.send(m);
    await until(() => got.length >= 40, 30_000, 'all 40');
    await until(async () => (await streamMessages(p)) === 0, 20_000, 'every message acknowledged');
    expect(got.sort()).toEqual(sent.map((m) => m.msgId).sort());
  });
});

describe('JetStreamBus events, broadcasts and calls', () => {
  it('carries events and broadcasts to the other nodes, never back to their own', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    const b = await bus('b', p);
    const evA: RemoteEvent[] = [];
    const evB: RemoteEvent[] = [];
    const brA: RemoteBroadcast[] = [];
    const brB: RemoteBroadcast[] = [];
    a.onEvent((e) => evA.push(e));
    b.onEvent((e) => evB.push(e));
    a.onBroadcast((x) => brA.push(x));
    b.onBroadcast((x) => brB.push(x));
    // What cannot be published (not JSON) is logged, never thrown into the kernel's event path.
    expect(() => a.publishEvent({ type: 'x', data: { n: 1n }, source: 0, node: 'a', at: 0 })).not.toThrow();
    const e1: RemoteEvent = {
      type: 'agent_started',
      data: { id: 7, name: 'w' },
      source: 0,
      node: 'a',
      at: 1,
    };
    a.publishEvent(e1);
    a.broadcast({ from: 7, fromName: 'w', fromNode: 'a', message: ODD, includeSelf: false });
    await until(() => evB.length === 1 && brB.length === 1, 20_000, 'b to see a’s event and broadcast');
    expect(evB[0]).toEqual(e1);
    expect(brB[0].message).toBe(ODD);
    // b answers: once a has b's, a's own (published before) would have arrived before it.
    b.publishEvent({ type: 'agent_exited', data: { id: 9 }, source: 0, node: 'b', at: 2 });
    b.broadcast({ from: 9, fromName: null, fromNode: 'b', message: '"hi"', includeSelf: true });
    await until(() => evA.length >= 1 && brA.length >= 1, 20_000, 'a to see b’s');
    expect(evA.map((e) => e.node)).toEqual(['b']);
    expect(brA).toEqual([{ from: 9, fromName: null, fromNode: 'b', message: '"hi"', includeSelf: true }]);
    expect(evB.map((e) => e.node)).toEqual(['a']);
  });

  it('answers calls, returns a handler’s error with its code, and names an unserved node unreachable', async () => {
    const p = freshPrefix();
    const a = await bus('a', p);
    // Served before start: start() resolves with the subscription in place.
    await bus('b', p, {}, nats.url, (b) =>
      b.serve(async (method, args, from) => {
        if (method === 'echo') return { args, from };
        if (method === 'nothing') return undefined;
        throw Object.assign(new Error('no agent named x'), { code: 'not_found' });
      }),
    );
    expect(await a.call('b', 'echo', { big: '123456789012345678901234567890', u: 'é' })).toEqual({
      args: { big: '123456789012345678901234567890', u: 'é' },
      from: 'a',
    });
    expect(await a.call('b', 'nothing', null)).toBeNull();
    const err = await a.call('b', 'kill', { name: 'x' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteCallError);
    expect(err).toMatchObject({
      node: 'b',
      method: 'kill',
      code: 'not_found',
      remoteMessage: 'no agent named x',
    });
    // A node that serves after it started: a call that came first waits for the handler.
    const late = await bus('late', p);
    const answer = a.call('late', 'echo', 1);
    late.serve(async (method, args) => ({ method, args }));
    expect(await answer).toEqual({ method: 'echo', args: 1 });
    const gone = await a.call('zz', 'list', {}).catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(NodeUnreachableError);
    expect((gone as Error).message).toMatch(/"zz"/);
  });
});

describe('JetStreamBus lifecycle', () => {
  it('splits credentials off the NATS URLs', () => {
    expect(natsServers(['nats://u:p%40ss@h1:4222', 'nats://u:p%40ss@h2:4222'])).toEqual({
      servers: ['nats://h1:4222', 'nats://h2:4222'],
      auth: { user: 'u', pass: 'p@ss' },
    });
    expect(natsServers(['nats://tok@h:4222']).auth).toEqual({ token: 'tok' });
    expect(natsServers(['nats://h:4222', '127.0.0.1:4222'])).toEqual({
      servers: ['nats://h:4222', '127.0.0.1:4222'],
      auth: {},
    });
    expect(() => natsServers(['nats://a:b@h1:1', 'nats://c:d@h2:1'])).toThrow(BusConfigError);
  });

  it('fails start() naming the servers when NATS is unreachable; close is idempotent; use after close fails', async () => {
    const port = await freePort();
    const dead = new JetStreamBus(
      {
        etcd: [],
        nats: [`nats://127.0.0.1:${port}`],
        node: 'x',
        advertise: '',
        leaseTtlS: 10,
        prefix: 'clove',
      },
      { log, connectTimeoutMs: 1500 },
    );
    const err = await dead.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BusUnreachableError);
    expect((err as Error).message).toContain(`nats://127.0.0.1:${port}`);

    const p = freshPrefix();
    const a = await bus('a', p);
    await Promise.all([a.start(), a.start()]); // started already: nothing more
    await a.close();
    await a.close();
    await expect(a.start()).rejects.toBeInstanceOf(BusClosedError);
    await expect(a.send(mail('w', '1'))).rejects.toBeInstanceOf(BusClosedError);
    await expect(a.own('w', () => true)).rejects.toBeInstanceOf(BusClosedError);
  });

  it('logs in with the credentials of the server URL and never names them in errors', async () => {
    const server = await startNats({ auth: { user: 'clove', password: 's3cr3t' } });
    try {
      const url = (cred: string) => `nats://${cred}@127.0.0.1:${server.port}`;
      const p = freshPrefix();
      const a = await bus('a', p, {}, url('clove:s3cr3t'));
      const b = await bus('b', p, {}, url('clove:s3cr3t'));
      const got: string[] = [];
      await b.own('w', (m) => (got.push(m.message), true));
      await a.send(mail('w', '"authenticated"'));
      await until(() => got.length === 1, 20_000, 'mail between logged-in nodes');

      const wrong = new JetStreamBus(
        { etcd: [], nats: [url('clove:wrong')], node: 'x', advertise: '', leaseTtlS: 10, prefix: p },
        { log, connectTimeoutMs: 20_000 },
      );
      const err = await wrong.start().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BusAuthError);
      expect((err as Error).message).toContain(`nats://127.0.0.1:${server.port}`);
      expect((err as Error).message).not.toContain('wrong');
    } finally {
      await Promise.all(buses.splice(0).map((x) => x.close()));
      await server.stop();
    }
  });

  it('reconnects after NATS restarts on the same store: waiting mail survives, consumers resume', async () => {
    const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clvjs'));
    let server = await startNats({ storeDir });
    try {
      const p = freshPrefix();
      const a = await bus('a', p, {}, server.url);
      const b = await bus('b', p, {}, server.url);
      const onV: string[] = [];
      await b.own('v', (m) => (onV.push(m.message), true));
      const waiting = mail('w', '"waited through a restart"');
      await a.send(waiting);

      await server.stop();
      server = await startNats({ storeDir, port: server.port });

      // Sends retry until a is connected again (the same msgId: JetStream keeps one).
      const after = mail('v', '"after the restart"');
      await until(
        () =>
          a.send(after).then(
            () => true,
            () => false,
          ),
        60_000,
        'a to send again',
      );
      await until(() => onV.length === 1, 60_000, 'b’s running consumer to get new mail');
      expect(onV).toEqual(['"after the restart"']);
      const onW: RemoteMessage[] = [];
      await b.own('w', (m) => (onW.push(m), true));
      await until(() => onW.length === 1, 60_000, 'the mail that waited');
      expect(onW[0]).toEqual(waiting);
    } finally {
      await Promise.all(buses.splice(0).map((x) => x.close()));
      await server.stop();
      fs.rmSync(storeDir, { recursive: true, force: true });
    }
  }, 120_000);

  it('keeps trying to own a name while NATS is down and binds once it is back; disown does not wait', async () => {
    const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clvjs'));
    let server = await startNats({ storeDir });
    try {
      const p = freshPrefix();
      const a = await bus('a', p, {}, server.url);
      const b = await bus('b', p, {}, server.url);
      await server.stop();
      const got: string[] = [];
      let owned = false;
      const owning = b.own('x', (m) => (got.push(m.message), true)).then(() => (owned = true));
      const dropped = b.own('y', () => true);
      await b.disown('y'); // returns while the bind of y still waits for NATS
      server = await startNats({ storeDir, port: server.port });
      await owning;
      await dropped;
      expect(owned).toBe(true);
      await until(
        async () => {
          try {
            await a.send(mail('x', '"bound late"', { msgId: 'late-1' }));
            return true;
          } catch {
            return false;
          }
        },
        60_000,
        'a to send again',
      );
      await until(() => got.length === 1, 60_000, 'the mail of the late-bound name');
      expect(got).toEqual(['"bound late"']);
    } finally {
      await Promise.all(buses.splice(0).map((x) => x.close()));
      await server.stop();
      fs.rmSync(storeDir, { recursive: true, force: true });
    }
  }, 150_000);

  it('a send NATS hangs on is unconfirmed; sent again with its msgId after the hang, it arrives once', async () => {
    const server = await startNats();
    try {
      const p = freshPrefix();
      const a = new JetStreamBus(
        { etcd: [], nats: [server.url], node: 'a', advertise: '', leaseTtlS: 10, prefix: p },
        { log, publishTimeoutMs: 1500 },
      );
      buses.push(a);
      await a.start();
      const b = await bus('b', p, {}, server.url);
      const got: string[] = [];
      await b.own('w', (m) => (got.push(m.msgId), true));
      const m1 = mail('w', '"in the hang"');
      await server.pause();
      let err: unknown;
      try {
        err = await a.send(m1).catch((e: unknown) => e);
      } finally {
        server.resume();
      }
      expect(err, `the send's outcome while NATS was stopped: ${String(err)}`).toBeInstanceOf(
        MailUnconfirmedError,
      );
      expect((err as Error).message).toMatch(/may or may not be stored/);
      await until(
        async () => {
          try {
            await a.send(m1);
            return true;
          } catch {
            return false;
          }
        },
        60_000,
        'the send again',
      );
      const m2 = mail('w', '"after"');
      await a.send(m2);
      await until(() => got.includes(m2.msgId), 30_000, 'the later mail');
      expect(got).toEqual([m1.msgId, m2.msgId]);
    } finally {
      await Promise.all(buses.splice(0).map((x) => x.close()));
      await server.stop();
    }
  }, 120_000);

  it('makes the stream and consumers again when NATS comes back without its store', async () => {
    let server = await startNats();
    try {
      const p = freshPrefix();
      const a = await bus('a', p, {}, server.url);
      const b = await bus('b', p, {}, server.url);
      const got: string[] = [];
      await b.own('w', (m) => (got.push(m.message), true));
      await a.send(mail('w', '"before"'));
      await until(() => got.length === 1, 20_000, 'mail before the loss');

      const port = server.port;
      await server.stop(); // removes its store
      server = await startNats({ port });

      const after = mail('w', '"after"');
      await until(
        () =>
          a.send(after).then(
            () => true,
            () => false,
          ),
        60_000,
        'a to send again (the stream made again)',
      );
      await until(() => got.length === 2, 90_000, 'b’s consumer made again to get new mail');
      expect(got).toEqual(['"before"', '"after"']);
    } finally {
      await Promise.all(buses.splice(0).map((x) => x.close()));
      await server.stop();
    }
  }, 150_000);
});
