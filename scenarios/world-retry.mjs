#!/usr/bin/env zx
// A retrying fetcher in a world (docs/worlds.md): 12 items from a mocked API, each fetched until it
// succeeds (at most 6 attempts), while the world drops 40% of requests (packet_loss, seed 1234) and
// serves the files. Run twice in two worlds made from the same config, it makes the same attempts and
// writes the same report; its report lands in the world's virtual file system, not on the disk.
import fs from 'node:fs';
import path from 'node:path';
import { load, scenario, verdict } from './_lib.mjs';

const FETCHER = `
import json
from clove_sdk import CloveClient
c = CloveClient()
c.connect()
items = json.loads(c.read_file("/config/items.json")["content"])
report = []
for item in items:
    attempts = 0
    body = None
    while attempts < 6 and body is None:
        attempts += 1
        r = c.call_json(0x50, {"url": "https://api.shop.test/items/" + item}, check=False)
        if r.get("success") and r.get("status_code") == 200:
            body = r["body"]
    report.append({"item": item, "attempts": attempts, "body": body})
c.write_file("/out/report.json", json.dumps(report))
print("done", json.dumps([x["attempts"] for x in report]), flush=True)
`;

const CONFIG = (seed) => ({
  seed,
  virtual_filesystem: {
    initial_files: { '/config/items.json': JSON.stringify([...'abcdefghijkl']) },
    writable_patterns: ['/out/**'],
  },
  network: {
    mode: 'mock',
    mock_responses: { 'https://api.shop.test/items/*': 'in stock' },
    fail_unmatched: true,
  },
});

await scenario('world retry', async () => {
  const { startKernel, tempDir, until } = await load('harness/kernel.js');
  const tk = await startKernel({});
  const dir = tempDir('clvws');
  const script = path.join(dir, 'fetcher.py');
  fs.writeFileSync(script, FETCHER);
  try {
    const op = await tk.client();
    /** One run: a fresh world from the config, the fetcher in it until it exits, its report. */
    const run = async (n, seed) => {
      const { world_id } = await op.worldCreate({ name: `retry ${n}`, config: CONFIG(seed) });
      await op.worldEvent({ world_id, event_type: 'packet_loss', params: { probability: 0.4 } });
      const s = await op.spawn({ name: `fetcher-${n}`, script, world: world_id });
      await until(
        async () => !(await op.list()).some((a) => a.id === s.id),
        60_000,
        `fetcher-${n} to finish`,
      );
      const snap = (await op.worldSnapshot({ world_id })).snapshot;
      const state = (await op.worldState({ world_id })).state;
      const report = JSON.parse(snap.vfs.files['/out/report.json']?.content ?? 'null');
      return { world_id, report, failures: state.chaos_metrics.failures_injected };
    };
    const a = await run(1, 1234);
    const b = await run(2, 1234);
    const attempts = (r) => r.report?.map((x) => x.attempts).join(',');
    console.log(`run 1 (${a.world_id}): attempts ${attempts(a)}; ${a.failures} requests lost`);
    console.log(`run 2 (${b.world_id}): attempts ${attempts(b)}; ${b.failures} requests lost`);
    return verdict('world retry', [
      ['the fetcher wrote its report into the world', Array.isArray(a.report) && a.report.length === 12],
      ['the report never reached the real disk', !fs.existsSync('/out/report.json')],
      [
        'packet_loss made it retry',
        a.failures > 0 && a.report.some((x) => x.attempts > 1),
        `${a.failures} lost`,
      ],
      ['every item fetched within 6 attempts', a.report.every((x) => x.body === 'in stock')],
      ['the same seed gives the same attempts twice', attempts(a) === attempts(b), attempts(b)],
      ['and the same report', JSON.stringify(a.report) === JSON.stringify(b.report)],
    ]);
  } finally {
    await tk.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
