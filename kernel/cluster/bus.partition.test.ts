/**
 * JetStreamBus, a name's new owner after its previous owner vanished holding mail (a node killed or cut
 * off by a partition after its consumer pulled a message, before it acknowledged it), against a real
 * nats-server -js: the new owner gets that mail at once, not after the consumer's ack wait.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { AckPolicy, connect, DeliverPolicy, nanos } from 'nats';
import { startNats, type ServiceProcess } from '../../harness/services.js';
import { until } from '../../harness/kernel.js';
import { JetStreamBus, nameToken } from './bus.js';
import type { ClusterOptions, RemoteMessage } from './types.js';

const log = pino({ level: process.env.CLOVE_TEST_LOG ?? 'silent' });
let nats: ServiceProcess;
const buses: JetStreamBus[] = [];

beforeAll(async () => {
  nats = await startNats();
});
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.close()));
});
afterAll(async () => {
  await nats?.stop();
});

/** An ack wait no test outlasts: mail held by a vanished owner would come back only after it. */
const HOUR_S = 3600;

async function bus(node: string, prefix: string): Promise<JetStreamBus> {
  const opts: ClusterOptions = {
    etcd: [],
    nats: [nats.url],
    node,
    advertise: '127.0.0.1:0',
    leaseTtlS: 10,
    prefix,
    mail: { ackWaitS: HOUR_S },
  };
  const b = new JetStreamBus(opts, { log });
  buses.push(b);
  await b.start();
  return b;
}

function mail(to: string, message: string): RemoteMessage {
  return {
    to,
    from: 1048577,
    fromName: 'sender',
    fromNode: 'a',
    message,
    msgId: randomUUID(),
    sentAt: Date.now(),
  } as RemoteMessage;
}

it('a new owner gets the mail a vanished owner pulled and never acknowledged, and the pulls it left waiting do not take new mail', async () => {
  const prefix = `tp${process.pid}`;
  const a = await bus('a', prefix);
  const token = nameToken('w');
  // The vanished owner: a client of its own binds the name's consumer as a node does, pulls one
  // message without acknowledging it, leaves a pull waiting, and is gone without a word (never closed).
  const nc = await connect({ servers: nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    const stream = `${prefix.toUpperCase()}_MAIL`;
    await jsm.consumers.add(stream, {
      durable_name: `mail_${token}`,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: `${prefix}.mail.${token}`,
      ack_wait: nanos(HOUR_S * 1000),
      max_deliver: -1,
    });
    const first = mail('w', '"held by the old owner"');
    await a.send(first);
    const consumer = await nc.jetstream().consumers.get(stream, `mail_${token}`);
    const held = await consumer.next({ expires: 10_000 });
    expect(held?.json<RemoteMessage>().msgId).toBe(first.msgId);
    // A pull still waiting on the server (the old owner's consume loop), for new mail.
    const waiting = await consumer.fetch({ max_messages: 100, expires: 600_000 });
    void (async () => {
      try {
        for await (const m of waiting) void m; // the vanished owner never acknowledges
      } catch {
        // the consumer made again under it: the pull ends
      }
    })();
    await until(
      async () => (await jsm.consumers.info(stream, `mail_${token}`)).num_waiting > 0,
      20_000,
      'the old owner’s pull to wait on the server',
    );

    // The new owner (it claimed the name in etcd first: nobody else owns it now).
    const b = await bus('b', prefix);
    const got: RemoteMessage[] = [];
    await b.own('w', (m) => (got.push(m), true));
    const second = mail('w', '"sent after the hand-over"');
    await a.send(second);
    await until(() => got.length >= 2, 60_000, 'the new owner to get both messages');
    expect(got.map((m) => m.msgId).sort()).toEqual([first.msgId, second.msgId].sort());
  } finally {
    await nc.close();
  }
}, 120_000);
