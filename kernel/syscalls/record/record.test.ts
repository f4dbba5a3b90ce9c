/**
 * Record and replay on real kernels (docs/protocol.md "Record and replay"): two agents' session is
 * recorded with every result; the export replays against a fresh kernel (new data dir) with the same
 * results; a tampered response is reported as the one mismatch, with its index and opcode; everything is
 * for operators only. The operator's side of the replay runs through the Python SDK.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startKernel, tempDir, until, type TestKernel } from '../../../harness/kernel.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';
import { Op } from '../../../protocol/index.js';

interface Entry {
  sequence_id: number;
  timestamp: string;
  agent_id: number;
  agent_name: string;
  role: string;
  opcode: number;
  opcode_name: string;
  payload: string;
  response: string;
  duration_us: number;
  success: boolean;
}
interface ReplayStatus {
  success: true;
  state: string;
  total_entries: number;
  current_entry: number;
  entries_replayed: number;
  entries_skipped: number;
  progress_percent: number;
  mismatches: number;
  mismatch_details: {
    index: number;
    sequence_id: number;
    agent_id: number;
    opcode: number;
    opcode_name: string;
    path: string;
    expected: string;
    got: string;
  }[];
  skipped_ops: Record<string, number>;
  last_error?: string;
}

/** Waits for a ping, keeps it (agent scope), answers it, then tells the operator it is done. */
const AGENT_B = `
import os
from clove_sdk import CloveClient

c = CloveClient(timeout=30)
c.connect()
c.subscribe(["CUSTOM"])
m = c.wait_message(timeout=20)
c.store("seen", m["message"], scope="agent")
c.fetch("seen", scope="agent")
c.send_message({"pong": m["message"]["ping"], "seen_from": m["from_name"]}, to_name="rec-a")
c.list_keys()
c.send_message({"done": "b"}, to=int(os.environ["REPORT_TO"]))
`;

/** Shares a key, pings B, waits for the pong, emits an event, tries to raise its rights, cleans up. */
const AGENT_A = `
import os
from clove_sdk import CloveClient

c = CloveClient(timeout=30)
c.connect()
c.store("shared", {"n": 1, "who": "a"})
c.fetch("shared")
c.send_message({"ping": 42}, to_name="rec-b")
r = c.wait_message(timeout=20)
c.store("pong", r["message"], scope="agent")
c.emit_event("ping", {"x": 1})
c.set_permissions(level="unrestricted")
c.delete_key("shared")
c.fetch("shared")
c.fetch("pong", scope="agent")
c.recv_messages()
c.send_message({"done": "a"}, to=int(os.environ["REPORT_TO"]))
`;

/** Sends itself a message by its own name and takes it; then reports the first message it gets next. */
const SOLO = `
import os
from clove_sdk import CloveClient

c = CloveClient(timeout=30)
c.connect()
c.store("own", [1, 2], scope="agent")
c.fetch("own", scope="agent")
c.send_message("to myself", to_name="solo")
c.recv_messages()
report = int(os.environ["REPORT_TO"])
c.send_message("ready", to=report)
m = c.wait_message(timeout=30)
c.send_message({"first": m["message"] if m else None}, to=report)
`;

/**
 * The operator's side through the Python SDK: REPLAY_START with the export read from a file, then
 * REPLAY_STATUS until the replay is over; prints the last status as JSON.
 */
const REPLAYER = `
import json, sys, time
from clove_sdk import CloveClient

c = CloveClient(sys.argv[1], timeout=30)
c.connect()
with open(sys.argv[2]) as f:
    data = f.read()
started = c.start_replay(data)
assert started["success"], started
while True:
    s = c.get_replay_status()
    if s["state"] not in ("running", "idle"):
        break
    time.sleep(0.05)
print(json.dumps({"started": started, "status": s}))
`;

let dir: string;
let tk: TestKernel;
let op: CloveClient;
let me: number;
let exported: string;
let entries: Entry[];
const fresh: TestKernel[] = [];

function script(name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** Replays `data` on a fresh kernel (its own data dir) through the Python SDK; returns the final status. */
async function replayOnFreshKernel(data: string): Promise<{
  started: { success: boolean; total_entries: number };
  status: ReplayStatus;
  kernel: TestKernel;
}> {
  const k = await startKernel();
  fresh.push(k);
  expect(k.dataDir).not.toBe(tk.dataDir);
  const file = path.join(dir, `export-${fresh.length}.json`);
  fs.writeFileSync(file, data);
  const py = script('replayer.py', REPLAYER);
  // Asynchronously: the kernel runs in this process.
  const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn('python3', [py, k.socketPath, file], {
      env: { ...process.env, PYTHONPATH: path.join(REPO_ROOT, 'sdk', 'python') },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
  expect(r.status, r.stderr).toBe(0);
  return {
    ...(JSON.parse(r.stdout) as {
      started: { success: boolean; total_entries: number };
      status: ReplayStatus;
    }),
    kernel: k,
  };
}

beforeAll(async () => {
  dir = tempDir('clvrec');
  tk = await startKernel();
  op = await tk.client();
  me = (await op.hello()).agent_id;
});
afterAll(async () => {
  for (const k of fresh) await k.stop();
  await tk?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('recording', () => {
  it("records the selected agents' syscalls with their results (IDLE → RECORDING → IDLE)", async () => {
    const idle = await op.call<Record<string, unknown>>(Op.RECORD_STATUS, {});
    expect(idle).toMatchObject({ success: true, recording: false, state: 'IDLE', entry_count: 0 });
    const started = await op.call(Op.RECORD_START, { filter_names: ['rec-a', 'rec-b'] });
    expect(started).toEqual({ success: true, recording: true, state: 'RECORDING' });
    await expect(op.call(Op.RECORD_START, {})).rejects.toThrow(/already recording/);
    expect(await op.call(Op.RECORD_STATUS, {})).toMatchObject({
      recording: true,
      state: 'RECORDING',
      filter_names: ['rec-a', 'rec-b'],
      max_entries: 50_000,
    });

    // The operator's own calls are not selected: neither these spawns nor its RECV.
    const b = await op.spawn({
      name: 'rec-b',
      script: script('b.py', AGENT_B),
      env: { REPORT_TO: String(me) },
    });
    const a = await op.spawn({
      name: 'rec-a',
      script: script('a.py', AGENT_A),
      env: { REPORT_TO: String(me) },
    });
    const done = new Set<string>();
    await until(async () => {
      const r = await op.recv({ max: 2, timeoutMs: 5_000 });
      for (const m of r.messages) done.add((m.message as { done: string }).done);
      return done.size === 2;
    }, 30_000);

    const stopped = await op.call<Record<string, unknown>>(Op.RECORD_STOP, {});
    expect(stopped).toMatchObject({ success: true, recording: false, state: 'IDLE', entries_dropped: 0 });
    await expect(op.call(Op.RECORD_STOP, {})).rejects.toThrow(/not recording/);

    const status = await op.call<{ recording_data: string; entry_count: number; last_sequence_id: number }>(
      Op.RECORD_STATUS,
      { export: true },
    );
    exported = status.recording_data;
    entries = JSON.parse(exported) as Entry[];
    expect(entries.length).toBe(status.entry_count);
    expect(stopped.entries_recorded).toBe(entries.length);
    expect(status.last_sequence_id).toBe(entries.length);
    expect(entries.map((e) => e.sequence_id)).toEqual(entries.map((_, i) => i + 1));
    expect(new Set(entries.map((e) => e.agent_id))).toEqual(new Set([a.id, b.id]));
    const ops = (id: number) => entries.filter((e) => e.agent_id === id).map((e) => e.opcode_name);
    // KEYS is never recorded.
    expect(ops(b.id)).toEqual(['SUBSCRIBE', 'RECV', 'STORE', 'FETCH', 'SEND', 'SEND']);
    expect(ops(a.id)).toEqual([
      'STORE',
      'FETCH',
      'SEND',
      'RECV',
      'STORE',
      'EMIT',
      'SET_PERMS',
      'DELETE',
      'FETCH',
      'FETCH',
      'RECV',
      'SEND',
    ]);
    // Each entry: who, what, the request and the reply as JSON text.
    const fetch = entries.find((e) => e.agent_id === a.id && e.opcode_name === 'FETCH')!;
    expect(fetch).toMatchObject({ agent_name: 'rec-a', role: 'agent', opcode: Op.FETCH, success: true });
    expect(JSON.parse(fetch.payload)).toEqual({ key: 'shared' });
    expect(JSON.parse(fetch.response)).toMatchObject({ exists: true, value: { n: 1, who: 'a' } });
    expect(fetch.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(typeof fetch.duration_us).toBe('number');
    // The RECV that waited for the ping is recorded with what it got (a spliced reply, as text).
    const recv = entries.find((e) => e.agent_id === b.id && e.opcode_name === 'RECV')!;
    expect(JSON.parse(recv.response)).toMatchObject({
      count: 1,
      messages: [{ from: a.id, message: { ping: 42 } }],
    });
    const denied = entries.find((e) => e.opcode_name === 'SET_PERMS')!;
    expect(denied.success).toBe(false);
    expect(JSON.parse(denied.response)).toMatchObject({ code: 'permission_denied' });

    // A page of entries.
    const page = await op.call<{ entries: Entry[] }>(Op.RECORD_STATUS, {
      get_entries: true,
      since_id: 2,
      limit: 3,
    });
    expect(page.entries.map((e) => e.sequence_id)).toEqual([3, 4, 5]);

    // Starting and stopping are audited.
    const audit = await op.call<{ entries: { event_type: string; details: Record<string, unknown> }[] }>(
      Op.GET_AUDIT_LOG,
      { category: 'SECURITY', agent_id: me },
    );
    const events = audit.entries.map((e) => e.event_type);
    expect(events).toEqual(expect.arrayContaining(['RECORDING_STARTED', 'RECORDING_STOPPED']));
    expect(audit.entries.find((e) => e.event_type === 'RECORDING_STOPPED')!.details).toMatchObject({
      stopped_by: me,
      entries_recorded: entries.length,
    });
  });

  it('bounds a recording: calls past max_entries are dropped and counted', async () => {
    await op.call(Op.RECORD_START, { max_entries: 3 });
    for (let i = 0; i < 5; i++) await op.call(Op.HEARTBEAT, {});
    await op.call(Op.LIST, {}); // never recorded, not counted
    const r = await op.call<{ entries_recorded: number; entries_dropped: number }>(Op.RECORD_STOP, {});
    expect(r).toMatchObject({ entries_recorded: 3, entries_dropped: 2 });
  });
});

describe('replay', () => {
  it('replays the export against a fresh kernel with the same results', async () => {
    const { started, status, kernel } = await replayOnFreshKernel(exported);
    expect(started).toMatchObject({ success: true, total_entries: entries.length });
    expect(status.last_error).toBeUndefined();
    expect(status).toMatchObject({
      state: 'completed',
      total_entries: entries.length,
      current_entry: entries.length,
      progress_percent: 100,
      mismatches: 0,
      mismatch_details: [],
      // The two reports to the operator went outside the recording.
      entries_skipped: 2,
      skipped_ops: { SEND: 2 },
    });
    expect(status.entries_replayed).toBe(entries.length - 2);
    // Its effects are this kernel's now (a global key deleted again; nothing left of the stand-ins)…
    const c = await kernel.client();
    expect(await c.call(Op.FETCH, { key: 'shared' })).toMatchObject({ exists: false });
    expect(await c.call(Op.LIST, {})).toEqual([]);
    await expect(c.call(Op.SEND, { to_name: 'rec-a', message: 1 })).rejects.toThrow(/not found/);
    // … and the replay is audited.
    const audit = await c.call<{ entries: { event_type: string; details: Record<string, unknown> }[] }>(
      Op.GET_AUDIT_LOG,
      { category: 'SECURITY' },
    );
    expect(audit.entries.find((e) => e.event_type === 'REPLAY_FINISHED')!.details).toMatchObject({
      state: 'completed',
      mismatches: 0,
    });
  });

  it('reports a tampered response as the one mismatch, with its index and opcode', async () => {
    const tampered = JSON.parse(exported) as Entry[];
    const i = tampered.findIndex(
      (e) => e.opcode_name === 'FETCH' && JSON.parse(e.response).value?.who === 'a',
    );
    const reply = JSON.parse(tampered[i].response);
    reply.value.n = 2;
    tampered[i].response = JSON.stringify(reply);
    const { status } = await replayOnFreshKernel(JSON.stringify(tampered));
    expect(status).toMatchObject({ state: 'completed', mismatches: 1 });
    expect(status.mismatch_details).toHaveLength(1);
    expect(status.mismatch_details[0]).toMatchObject({
      index: i,
      sequence_id: tampered[i].sequence_id,
      agent_id: tampered[i].agent_id,
      opcode: Op.FETCH,
      opcode_name: 'FETCH',
      path: 'value.n',
    });
    expect(JSON.parse(status.mismatch_details[0].expected).value.n).toBe(2);
    expect(JSON.parse(status.mismatch_details[0].got).value.n).toBe(1);
  });

  it("loads a recording in chunks (`more`), and replays this kernel's own recording; one replay at a time", async () => {
    const k = await startKernel();
    fresh.push(k);
    const c = await k.client();
    const half = Math.floor(entries.length / 2);
    const first = await c.call(Op.REPLAY_START, { recording_data: entries.slice(0, half), more: true });
    expect(first).toEqual({ success: true, total_entries: half, state: 'idle' });
    const go = await c.call(Op.REPLAY_START, { recording_data: JSON.stringify(entries.slice(half)) });
    expect(go).toMatchObject({ total_entries: entries.length, state: 'running' });
    const s = await until(async () => {
      const r = await c.call<ReplayStatus>(Op.REPLAY_STATUS, {});
      return r.state === 'running' ? null : r;
    });
    expect(s).toMatchObject({ state: 'completed', mismatches: 0, entries_skipped: 2 });

    await expect(c.call(Op.REPLAY_START, { recording_data: '{not json' })).rejects.toThrow(
      /Failed to import recording data/,
    );
    await expect(c.call(Op.REPLAY_START, { recording_data: [{ opcode_name: 'NOPE' }] })).rejects.toThrow(
      /unknown opcode/,
    );
    await expect(c.call(Op.REPLAY_START, {})).rejects.toThrow(/No recording loaded/);

    // A long replay (40,000 entries, loaded in four frames) runs in the background: its progress can be
    // read while it runs, and a second one is refused until it is over.
    const beat = { agent_id: 7, opcode_name: 'HEARTBEAT', payload: '{}', response: '{"success":true}' };
    for (let i = 0; i < 3; i++)
      await c.call(Op.REPLAY_START, { recording_data: Array(10_000).fill(beat), more: true });
    await c.call(Op.REPLAY_START, { recording_data: Array(10_000).fill(beat) });
    await expect(c.call(Op.REPLAY_START, {})).rejects.toThrow(/Replay already in progress/);
    const mid = await c.call<ReplayStatus>(Op.REPLAY_STATUS, {});
    expect(mid).toMatchObject({ state: 'running', total_entries: 40_000 });
    expect(mid.progress_percent).toBeLessThan(100);
    const long = await until(async () => {
      const r = await c.call<ReplayStatus>(Op.REPLAY_STATUS, {});
      return r.state === 'running' ? null : r;
    }, 60_000);
    expect(long).toMatchObject({
      state: 'completed',
      entries_replayed: 40_000,
      mismatches: 0,
      progress_percent: 100,
    });

    // Its own recording, while the recorded agent still lives here: its name is taken, so the stand-in
    // goes nameless, and a SEND by that name reaches the stand-in, never the live agent.
    const me2 = (await c.hello()).agent_id;
    await c.call(Op.RECORD_START, { filter_names: ['solo'] });
    await k
      .client()
      .then((o) =>
        o.spawn({ name: 'solo', script: script('solo.py', SOLO), env: { REPORT_TO: String(me2) } }),
      );
    expect((await c.recv({ max: 1, timeoutMs: 20_000 })).messages[0].message).toBe('ready');
    expect(await c.call(Op.RECORD_STOP, {})).toMatchObject({ entries_recorded: 5 });
    const own = await c.call(Op.REPLAY_START, {});
    expect(own).toMatchObject({ total_entries: 5, state: 'running' });
    const done = await until(async () => {
      const r = await c.call<ReplayStatus>(Op.REPLAY_STATUS, {});
      return r.state === 'running' ? null : r;
    });
    expect(done.mismatch_details).toEqual([]);
    expect(done).toMatchObject({
      state: 'completed',
      entries_replayed: 4,
      entries_skipped: 1,
      mismatches: 0,
    });
    // The live agent's first message is the operator's, not the replay's.
    await c.call(Op.SEND, { to_name: 'solo', message: 'quit' });
    expect((await c.recv({ max: 1, timeoutMs: 20_000 })).messages[0].message).toEqual({ first: 'quit' });
  });
});
