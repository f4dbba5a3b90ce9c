#!/usr/bin/env zx
// Five fast senders, one slow consumer (1 message per 100 ms), mailboxes bounded at 32. The consumer's
// mailbox fills: senders get `mailbox_full` errors (and count those messages as not sent); every message
// the kernel accepted reaches the consumer — nothing is dropped silently.
import { load, scenario, verdict } from './_lib.mjs';

await scenario('slow consumer', async () => {
  const { Swarm } = await load('harness/swarm.js');
  const { sleep } = await load('harness/timing.js');
  const mailbox = 32;
  const swarm = await Swarm.start({
    agents: 6,
    intervalMs: 20,
    focus: 'a-0',
    kernelMode: 'process',
    kernel: { mailboxSize: mailbox },
  });
  try {
    await swarm.spawnAll();
    await swarm.waitUp();
    await swarm.command('a-0', { cmd: 'slow', ms: 100, max: 1 });
    const senders = swarm.names.filter((n) => n !== 'a-0');
    let maxQueued = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 6000) {
      const a = (await swarm.listByName()).get('a-0');
      maxQueued = Math.max(maxQueued, a?.mailbox ?? 0);
      await sleep(100);
    }
    await swarm.stopTraffic(60_000, [...senders, 'a-0']);
    const acct = await swarm.drain(60_000, 5000);
    const full = senders.flatMap((n) => swarm.track(n).errors).filter((e) => e.code === 'mailbox_full');
    const other = swarm.names.flatMap((n) => swarm.track(n).errors).filter((e) => e.code !== 'mailbox_full');
    const consumer = (await swarm.listByName()).get('a-0');
    return verdict('slow consumer', [
      [
        `the consumer's mailbox filled up to its bound (${mailbox})`,
        maxQueued >= mailbox - 1,
        `max queued ${maxQueued}`,
      ],
      ['senders got mailbox_full errors (code)', full.length > 0, `${full.length} refused sends`],
      ['no other error', other.length === 0, other.map((e) => e.code).join(',') || 'none'],
      [
        'every accepted message was received: none dropped silently',
        acct.lost.length === 0 && acct.sent > 0,
        `${acct.delivered}/${acct.sent} delivered, ${acct.lost.length} lost`,
      ],
      [
        'the slow consumer was never restarted',
        consumer?.restarts === 0 && consumer.state === 'RUNNING',
        `${consumer?.state}, restarts ${consumer?.restarts}`,
      ],
    ]);
  } finally {
    await swarm.close();
  }
});
