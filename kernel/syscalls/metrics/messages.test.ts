/**
 * The per-agent message counters of METRICS_ALL_AGENTS (`kernel_stats.messages_sent/recv`, what
 * `clove top` shows as MSGS OUT / MSGS IN): SEND and BROADCAST deliveries count for the sender, RECV for
 * the receiver, between real agents.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, until, type TestKernel } from '../../../harness/kernel.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';

let tk: TestKernel;
let op: CloveClient;
beforeAll(async () => {
  tk = await startKernel();
  op = await tk.client();
});
afterAll(async () => tk?.stop());

describe('message counters', () => {
  it('SEND and BROADCAST count for the sender (per delivery), RECV for the receiver', async () => {
    // Scripts outside the kernel's own directory (which holds its operator socket).
    const dir = tempDir();
    const listener = path.join(dir, 'listener.py');
    const chatter = path.join(dir, 'chatter.py');
    fs.writeFileSync(
      listener,
      [
        'from clove_sdk import CloveClient',
        'c = CloveClient()',
        'got = 0',
        'print("listening", flush=True)',
        'while got < 2:',
        '    if c.wait_message(timeout=30): got += 1',
        'print("got", got, flush=True)',
        'while True: c.wait_message(timeout=30)',
      ].join('\n'),
    );
    fs.writeFileSync(
      chatter,
      [
        'from clove_sdk import CloveClient',
        'c = CloveClient()',
        'c.send_message("direct", to_name="listener")',
        'c.broadcast("to all")',
        'print("sent", flush=True)',
        'while True: c.wait_message(timeout=30)',
      ].join('\n'),
    );
    const l = await op.spawn({ name: 'listener', script: listener });
    const log = path.join(tk.dataDir, 'logs', 'listener.log');
    await until(() => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('listening'), 20_000);
    const ch = await op.spawn({ name: 'chatter', script: chatter });
    const stats = async (id: number) =>
      (await op.allAgentMetrics()).agents.find((m) => m.agent_id === id)!.kernel_stats;
    await until(async () => (await stats(l.id)).messages_recv === 2, 20_000, 'listener received both');
    expect((await stats(ch.id)).messages_sent).toBe(2);
    expect((await stats(l.id)).messages_sent).toBe(0);
    expect((await stats(ch.id)).messages_recv).toBe(0);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
