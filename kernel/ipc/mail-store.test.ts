/**
 * Mailboxes that survive a kernel crash (docs/restart.md): DurableMail writes agents' messages through
 * to SQLite before they are acknowledged, forgets them once they left the kernel, and gives an identity
 * its messages back, in order and byte for byte; and end to end, a kernel SIGKILLed with messages queued
 * for an agent gives them to it after the restart.
 */
import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { DEFAULT_BUDGETS } from '../core/budgets.js';
import { writeScope } from '../core/write-scope.js';
import { startKernelProcess, tempDir, until, type KernelProcess } from '../../harness/kernel.js';
import { DurableMail } from './mail-store.js';
import { PostOffice, QueuedBytes } from './mailboxes.js';

const log = pino({ level: 'silent' });
const tick = () => new Promise((r) => setImmediate(r));

function open(file: string, identities: Record<number, string>): DurableMail {
  const m = new DurableMail(new PostOffice(() => DEFAULT_BUDGETS, new QueuedBytes(1 << 30)));
  m.open({ path: file, identityOf: (id) => identities[id], log });
  return m;
}

function stored(file: string): number {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare('SELECT count(*) AS n FROM mailbox').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

describe('DurableMail', () => {
  it('gives an identity its messages back after a crash, in order and byte for byte; taken ones are gone', async () => {
    const file = path.join(tempDir(), 'mail.db');
    const a = open(file, { 5: 'sink#1' });
    const bodies = ['"one"', '{"two":[2,"é ✓ 😀"]}', '"three"', '"four"'].map((b) => b);
    for (const b of bodies) a.deliver(5, 3, 'source', b);
    expect(a.take(5, 1, {}).map((m) => m.json)).toEqual([bodies[0]]);
    await tick();
    expect(stored(file)).toBe(3);
    // The kernel dies (nothing closed): a new one on the same file gives them back to the new id.
    const b = open(file, { 9: 'sink#1' });
    expect(b.stored('sink#1')).toBe(3);
    expect(b.restoreFor('sink#1', 9)).toBe(3);
    const back = b.take(9, 10, {});
    expect(back.map((m) => m.json)).toEqual(bodies.slice(1));
    expect(back.map((m) => [m.from, m.from_name])).toEqual([
      [3, 'source'],
      [3, 'source'],
      [3, 'source'],
    ]);
    await tick();
    expect(stored(file)).toBe(0);
    a.close();
    b.close();
  });

  it('a leased message stays stored until its lease is acknowledged; a requeued one stays', async () => {
    const file = path.join(tempDir(), 'mail.db');
    const m = open(file, { 5: 'sink#1' });
    m.deliver(5, 3, 's', '"x"');
    m.deliver(5, 3, 's', '"y"');
    const holder = {};
    expect(m.take(5, 1, holder, true).map((x) => x.json)).toEqual(['"x"']);
    await tick();
    expect(stored(file)).toBe(2);
    expect(m.requeueLeases(5, holder)).toBe(1);
    expect(m.take(5, 1, holder, true).map((x) => x.json)).toEqual(['"x"']);
    // The next take acknowledges the lease.
    expect(m.take(5, 1, holder, true).map((x) => x.json)).toEqual(['"y"']);
    await tick();
    expect(stored(file)).toBe(1);
    m.close();
  });

  it('clients are not persisted; an ended identity and identities that no longer exist lose their rows', async () => {
    const file = path.join(tempDir(), 'mail.db');
    const m = open(file, { 5: 'a#1', 6: 'b#1' });
    m.deliver(7, 3, 's', '"to a client"');
    m.deliver(5, 3, 's', '"to a"');
    m.deliver(6, 3, 's', '"to b"');
    expect(stored(file)).toBe(2);
    m.identityEnded('a#1');
    expect(stored(file)).toBe(1);
    expect(m.prune(['a#1'])).toBe(1);
    expect(stored(file)).toBe(0);
    m.close();
  });

  it('inside a write scope the writes are committed together when it ends, before replies would leave', () => {
    const file = path.join(tempDir(), 'mail.db');
    const m = open(file, { 5: 'a#1' });
    writeScope(() => {
      m.deliver(5, 3, 's', '"1"');
      m.deliver(5, 3, 's', '"2"');
      expect(stored(file), 'not committed yet').toBe(0);
    });
    expect(stored(file)).toBe(2);
    m.close();
  });

  it('a message that cannot be stored is refused, and not queued', () => {
    const dir = tempDir();
    const file = path.join(dir, 'mail.db');
    const m = open(file, { 5: 'a#1' });
    m.deliver(5, 3, 's', '"ok"');
    // The store is gone under the kernel (a read-only file system would do the same).
    const db = (m as unknown as { db: Database.Database }).db;
    db.exec('DROP TABLE mailbox');
    expect(() => m.deliver(5, 3, 's', '"lost?"')).toThrow(/could not be stored/);
    expect(m.size(5)).toBe(1);
    m.close();
  });
});

const running: KernelProcess[] = [];
afterEach(async () => {
  for (const k of running.splice(0)) await k.stop('SIGTERM');
});

/** Waits until a file `go` appears in its work directory, then hands every message it gets to `collector`. */
const SINK = `
import os, time
from clove_sdk import CloveClient
c = CloveClient(timeout=30)
c.hello()
while not os.path.exists("go"):
    time.sleep(0.05)
while True:
    m = c.wait_message(timeout=None)
    c.send_message(m["message"], to_name="collector")
`;

describe.each(['auto', 'off'])(
  'a kernel SIGKILLed with messages queued for an agent (sandbox %s)',
  (sandbox) => {
    it('gives them to the agent after the restart, in order', async () => {
      const dir = tempDir();
      const sock = path.join(dir, 's.sock');
      const data = path.join(dir, 'data');
      const script = path.join(tempDir(), 'sink.py');
      fs.writeFileSync(script, SINK);
      const start = async () => {
        const k = await startKernelProcess({
          socketPath: sock,
          dataDir: data,
          extra: ['--sandbox', sandbox],
        });
        running.push(k);
        return k;
      };
      const k1 = await start();
      const op1 = await k1.client();
      await op1.spawn({ name: 'sink', script, restart_policy: 'always' });
      const sent = Array.from({ length: 50 }, (_, i) => ({ i, text: `message ${i} ✓` }));
      for (const m of sent) expect((await op1.send('sink', m)).success).toBe(true);
      expect((await op1.list()).find((a) => a.name === 'sink')?.mailbox).toBe(50);
      k1.child.kill('SIGKILL');
      await k1.exited;

      const k2 = await start();
      const op2 = await k2.client();
      await op2.register('collector');
      expect((await op2.list()).find((a) => a.name === 'sink')?.mailbox).toBe(50);
      fs.writeFileSync(path.join(data, 'work', 'sink', 'go'), '');
      const got: unknown[] = [];
      await until(
        async () => {
          const r = await op2.recv({ max: 100, timeoutMs: 1000 });
          got.push(...r.messages.map((m) => m.message));
          return got.length >= 50;
        },
        30_000,
        'the queued messages',
      );
      expect(got).toEqual(sent);
      expect(k2.stderr()).toMatch(/queued messages given back/);
    }, 90_000);
  },
);
