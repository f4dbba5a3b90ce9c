/** The external services the cluster tests stand on start, answer and stop (real etcd, real NATS). */
import { afterAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import fs from 'node:fs';
import { startEtcd, startNats, type ServiceProcess } from './services.js';

const started: ServiceProcess[] = [];
afterAll(async () => {
  for (const s of started) await s.stop();
});

async function accepts(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(port, '127.0.0.1', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
  });
}

describe('harness services', () => {
  it('starts etcd and answers its health endpoint, then stops and removes its directory', async () => {
    const etcd = await startEtcd();
    started.push(etcd);
    const r = await fetch(`${etcd.url}/health`);
    expect(((await r.json()) as { health: string }).health).toBe('true');
    await etcd.stop();
    expect(fs.existsSync(etcd.dir)).toBe(false);
    expect(await accepts(etcd.port)).toBe(false);
  });

  it('restarts etcd on the same port with the same data (an outage, not a new server)', async () => {
    const etcd = await startEtcd();
    started.push(etcd);
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const put = await fetch(`${etcd.url}/v3/kv/put`, {
      method: 'POST',
      body: JSON.stringify({ key: b64('k'), value: b64('kept') }),
    });
    expect(put.ok).toBe(true);
    const before = etcd.child.pid;
    await etcd.restart();
    expect(etcd.child.pid).not.toBe(before);
    const r = await fetch(`${etcd.url}/v3/kv/range`, {
      method: 'POST',
      body: JSON.stringify({ key: b64('k') }),
    });
    const kvs = ((await r.json()) as { kvs?: Array<{ value: string }> }).kvs ?? [];
    expect(kvs.map((kv) => Buffer.from(kv.value, 'base64').toString())).toEqual(['kept']);
    await etcd.stop();
    await expect(etcd.restart()).rejects.toThrow(/stopped/);
  });

  it('starts NATS with JetStream enabled', async () => {
    const nats = await startNats();
    started.push(nats);
    const r = await new Promise<string>((res, rej) => {
      const s = net.connect(nats.port, '127.0.0.1');
      s.once('data', (d) => (s.destroy(), res(d.toString())));
      s.once('error', rej);
    });
    expect(r).toMatch(/^INFO .*"jetstream":true/);
    await nats.stop();
  });
});
