/** Calls made with `async: true` (EXEC, HTTP, THINK) and ASYNC_RESULTS, against a real kernel. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, type TestKernel } from '../../../harness/kernel.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';

let tk: TestKernel;
let op: CloveClient;
beforeAll(async () => {
  tk = await startKernel();
  op = await tk.client();
});
afterAll(async () => tk?.stop());

describe('async calls', () => {
  it('EXEC with async: true is accepted at once; ASYNC_RESULTS waits for and hands out its reply', async () => {
    const t0 = Date.now();
    // The command takes 1.5 s: an answer well before that is one that did not wait for it (a margin a
    // loaded machine's scheduling cannot eat, unlike 250 ms against 300).
    const acc = (await op.exec({ command: 'sleep 1.5 && echo late', async: true })) as unknown as {
      async: boolean;
      request_id: number;
      status: string;
    };
    expect(acc).toMatchObject({ success: true, async: true, status: 'accepted' });
    expect(Date.now() - t0).toBeLessThan(1000);
    const mine = (await op.exec({ command: 'echo mine', async: true, request_id: 777 })) as unknown as {
      request_id: number;
    };
    expect(mine.request_id).toBe(777);
    const got: {
      request_id: number;
      opcode_name: string;
      result: Record<string, unknown>;
      payload: string;
    }[] = [];
    while (got.length < 2) {
      const r = await op.asyncResults({ max: 10, timeoutMs: 5000 });
      got.push(...(r.results as typeof got));
      if (!r.count) break;
    }
    const byId = new Map(got.map((g) => [g.request_id, g]));
    expect(byId.get(acc.request_id)).toMatchObject({
      opcode_name: 'EXEC',
      result: { stdout: 'late\n', exit_code: 0 },
    });
    expect(JSON.parse(byId.get(777)!.payload)).toMatchObject({ stdout: 'mine\n' });
    expect((await op.asyncResults({ max: 10 })).count).toBe(0);
  });

  it('a refused async call is an error reply, not an accepted one; failures come back as results', async () => {
    // Checks that need no network come before the accept; the address rule is applied at connect time.
    await expect(op.http({ url: 'ftp://example.com/', async: true })).rejects.toThrow(/scheme|http/i);
    const http = (await op.http({ url: 'http://127.0.0.1:9/', async: true })) as unknown as {
      request_id: number;
    };
    const think = (await op.think({ prompt: 'hi', async: true })) as unknown as { request_id: number };
    const got = new Map<number, Record<string, unknown>>();
    while (got.size < 2) {
      const r = await op.asyncResults({ max: 10, timeoutMs: 5000 });
      if (!r.count) break;
      for (const x of r.results) got.set(x.request_id, x.result as Record<string, unknown>);
    }
    expect(got.get(http.request_id)).toMatchObject({ success: false, code: 'permission_denied' });
    expect(got.get(think.request_id)).toMatchObject({ success: false, code: 'not_found' });
    // The denial found in the background is audited like any other.
    const log = await op.getAuditLog({ category: 'SECURITY', limit: 20 });
    expect(JSON.stringify(log)).toContain('"async":true');
  });

  it("an agent's async calls are bounded by its async_requests budget", async () => {
    const dir = tempDir();
    fs.writeFileSync(
      path.join(dir, 'flood.py'),
      [
        'import os',
        'from clove_sdk import CloveClient',
        'from clove_sdk.protocol import SyscallOp',
        'with CloveClient(timeout=30) as c:',
        '    codes = []',
        '    for i in range(3):',
        '        r = c.call_json(SyscallOp.EXEC, {"command": "sleep 2", "async": True})',
        '        codes.append(r.get("code") or r.get("status"))',
        '    c.send_message({"codes": codes}, to=int(os.environ["REPORT_TO"]))',
        '    c.wait_message(timeout=None)',
      ].join('\n'),
    );
    const me = (await op.hello()).agent_id;
    await op.spawn({
      name: 'async-flood',
      script: path.join(dir, 'flood.py'),
      env: { REPORT_TO: String(me) },
      budgets: { async_requests: 2 },
    });
    const m = await op.recv({ max: 1, timeoutMs: 15_000 });
    expect(m.messages[0].message).toEqual({ codes: ['accepted', 'accepted', 'quota_exceeded'] });
    await op.kill('async-flood');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
