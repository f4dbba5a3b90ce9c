/**
 * The audit family on real kernels (docs/protocol.md "Audit"): lifecycle and denials are recorded with
 * the agent's id; only operators read or configure the log (an agent's attempt is denied and itself
 * audited); a configuration change is always recorded; `log_syscalls` records every syscall;
 * `max_entries` bounds what is kept; entries and configuration survive a kernel restart.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import {
  startKernel,
  startKernelProcess,
  tempDir,
  until,
  type KernelProcess,
  type TestKernel,
} from '../../../harness/kernel.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';
import { Op } from '../../../protocol/index.js';

interface Entry {
  id: number;
  timestamp: string;
  category: string;
  event_type: string;
  agent_id: number;
  agent_name?: string;
  success: boolean;
  details: Record<string, unknown>;
}
interface Log {
  success: true;
  count: number;
  entries: Entry[];
  more: boolean;
}

/**
 * Tries what an agent must not: raise its own rights, kill an agent that is not its child, read and
 * reconfigure the audit log, control recording and replay; reports every reply to REPORT_TO.
 */
const INTRUDER = `
import os
from clove_sdk import CloveClient
from clove_sdk.protocol import SyscallOp

c = CloveClient(timeout=30)
c.connect()
out = {
    "me": c.hello()["agent_id"],
    "set_perms": c.set_permissions(level="unrestricted"),
    "kill": c.call_json(SyscallOp.SYS_KILL, {"id": int(os.environ["VICTIM"])}),
    "get_audit_log": c.get_audit_log(),
    "set_audit_config": c.set_audit_config(log_security=False, max_entries=1),
    "start_recording": c.start_recording(),
    "recording_status": c.get_recording_status(export=True),
    "start_replay": c.start_replay("[]"),
    "replay_status": c.get_replay_status(),
}
c.send_message(out, to=int(os.environ["REPORT_TO"]))
`;

/** Sleeps until killed. */
const SLEEPER = `
import time
time.sleep(3600)
`;

let dir: string;
let tk: TestKernel;
let op: CloveClient;
let me: number;

function script(name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

const log = (c: CloveClient, req: Record<string, unknown> = {}) => c.call<Log>(Op.GET_AUDIT_LOG, req);

beforeAll(async () => {
  dir = tempDir('clvaud');
  tk = await startKernel();
  op = await tk.client();
  me = (await op.hello()).agent_id;
});
afterAll(async () => {
  await tk?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('audit log', () => {
  it("records lifecycle events and an agent's denials under its id; an agent can neither read nor change the log", async () => {
    const victim = await op.spawn({ name: 'victim', script: script('sleeper.py', SLEEPER) });
    const intruder = await op.spawn({
      name: 'intruder',
      script: script('intruder.py', INTRUDER),
      env: { REPORT_TO: String(me), VICTIM: String(victim.id) },
    });
    const got = await op.recv({ max: 1, timeoutMs: 20_000 });
    expect(got.count).toBe(1);
    const out = got.messages[0].message as Record<string, { success: boolean; code: string }>;
    expect(out.me).toBe(intruder.id);
    for (const k of [
      'set_perms',
      'kill',
      'get_audit_log',
      'set_audit_config',
      'start_recording',
      'recording_status',
      'start_replay',
      'replay_status',
    ])
      expect(out[k], k).toMatchObject({ success: false, code: 'permission_denied' });

    // The denials, each under the intruder's id, with the syscall it tried.
    const denied = await until(async () => {
      const r = await log(op, { category: 'security', agent_id: intruder.id });
      return r.count >= 8 ? r : null;
    });
    expect(denied.entries.every((e) => e.event_type === 'PERMISSION_DENIED' && !e.success)).toBe(true);
    expect(denied.entries.every((e) => e.agent_id === intruder.id && e.agent_name === 'intruder')).toBe(true);
    expect(denied.entries.map((e) => e.details.syscall)).toEqual([
      'SET_PERMS',
      'KILL',
      'GET_AUDIT_LOG',
      'SET_AUDIT_CONFIG',
      'RECORD_START',
      'RECORD_STATUS',
      'REPLAY_START',
      'REPLAY_STATUS',
    ]);
    expect(denied.entries[0].details.code).toBe('permission_denied');
    // Nothing changed: security logging is on, the bound is the default, and nobody is recording.
    const cfg = await op.call<{ config: Record<string, unknown> }>(Op.SET_AUDIT_CONFIG, {});
    expect(cfg.config).toMatchObject({ log_security: true, max_entries: 10_000 });
    expect((await op.call<{ recording: boolean }>(Op.RECORD_STATUS, {})).recording).toBe(false);

    // Lifecycle: both spawns; the intruder's exit; the victim's when the operator kills it.
    await op.kill(victim.id);
    const life = await until(async () => {
      const r = await log(op, { category: 'AGENT_LIFECYCLE' });
      const types = r.entries.map((e) => `${e.event_type}:${e.agent_id}`);
      return types.includes(`AGENT_EXITED:${victim.id}`) && types.includes(`AGENT_EXITED:${intruder.id}`)
        ? r
        : null;
    });
    const spawned = life.entries.filter((e) => e.event_type === 'AGENT_SPAWNED');
    expect(spawned.map((e) => e.agent_id)).toEqual(expect.arrayContaining([victim.id, intruder.id]));
    expect(spawned.find((e) => e.agent_id === intruder.id)).toMatchObject({
      category: 'AGENT_LIFECYCLE',
      agent_name: 'intruder',
      success: true,
      details: { agent_id: intruder.id, name: 'intruder', pid: intruder.pid },
    });
    const killed = life.entries.find((e) => e.event_type === 'AGENT_EXITED' && e.agent_id === victim.id)!;
    expect(killed.details.killed_by).toBe(me);
    expect(killed.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('queries: category in any case, agent, event type, since_id, limit (capped at 1000) and `more`', async () => {
    await expect(log(op, { category: 'nonsense' })).rejects.toThrow(/unknown category/);
    const all = await log(op, { limit: 5000 });
    expect(all.count).toBeGreaterThan(3);
    expect(all.count).toBeLessThanOrEqual(1000);
    const ids = all.entries.map((e) => e.id);
    expect([...ids].sort((a, b) => a - b)).toEqual(ids); // oldest first
    const two = await log(op, { limit: 2 });
    expect(two.entries.map((e) => e.id)).toEqual(ids.slice(-2)); // the newest two
    expect(two.more).toBe(true);
    const after = await log(op, { since_id: ids[ids.length - 2] });
    expect(after.entries.map((e) => e.id)).toEqual(ids.slice(-1));
    expect(after.more).toBe(false);
    const spawned = await log(op, { event_type: 'AGENT_SPAWNED' });
    expect(spawned.count).toBeGreaterThan(0);
    expect(spawned.entries.every((e) => e.event_type === 'AGENT_SPAWNED')).toBe(true);
    expect((await log(op, { limit: 0 })).count).toBe(0);
  });

  it('SET_AUDIT_CONFIG is always audited; log_syscalls records every syscall (small requests inline)', async () => {
    const r = await op.call<{ config: Record<string, unknown> }>(Op.SET_AUDIT_CONFIG, {
      log_syscalls: true,
      log_security: false,
    });
    expect(r.config).toMatchObject({ log_syscalls: true, log_security: false, max_entries: 10_000 });
    expect(Object.keys(r.config).sort()).toEqual(
      [
        'max_entries',
        'log_syscalls',
        'log_security',
        'log_lifecycle',
        'log_ipc',
        'log_state',
        'log_resource',
        'log_network',
        'log_world',
      ].sort(),
    );
    // Security logging is off now, and the change that switched it off is still there.
    const change = await log(op, { event_type: 'AUDIT_CONFIG_CHANGED', limit: 1 });
    expect(change.entries[0]).toMatchObject({
      category: 'SECURITY',
      agent_id: me,
      success: true,
      details: { changed_by: me, changes: { log_syscalls: true, log_security: false } },
    });
    await op.call(Op.STORE, { key: 'audit-small', value: 1 });
    await op.call(Op.STORE, { key: 'audit-big', value: 'x'.repeat(1000) });
    await expect(op.call(Op.FETCH, {})).rejects.toThrow(/key is required/);
    const sys = await log(op, { category: 'SYSCALL', agent_id: me });
    const byCall = (pred: (e: Entry) => boolean) => sys.entries.filter(pred).at(-1)!;
    const small = byCall((e) => e.details.syscall === 'STORE' && !('request_bytes' in e.details));
    expect(small).toMatchObject({
      event_type: 'SYSCALL',
      success: true,
      details: { syscall: 'STORE', request: { key: 'audit-small', value: 1 } },
    });
    expect(typeof small.details.duration_us).toBe('number');
    const big = byCall((e) => e.details.syscall === 'STORE' && 'request_bytes' in e.details);
    expect(big.details.request).toBeUndefined();
    expect(big.details.request_bytes).toBeGreaterThan(1000);
    expect(byCall((e) => e.details.syscall === 'FETCH')).toMatchObject({
      success: false,
      details: { code: 'invalid_request' },
    });
    await op.call(Op.SET_AUDIT_CONFIG, { log_syscalls: false, log_security: true });
    const last = (await log(op, { limit: 1 })).entries[0].id;
    await op.call(Op.STORE, { key: 'audit-after', value: 1 });
    expect((await log(op, { category: 'SYSCALL', since_id: last })).count).toBe(0);
  });

  it('max_entries bounds the log (oldest trimmed first)', async () => {
    await op.call(Op.SET_AUDIT_CONFIG, { max_entries: 5, log_syscalls: true });
    for (let i = 0; i < 150; i++) await op.call(Op.HEARTBEAT, {});
    const r = await log(op, { limit: 1000 });
    expect(r.count).toBe(5);
    expect(r.entries.every((e) => e.details.syscall === 'HEARTBEAT')).toBe(true);
    const ids = r.entries.map((e) => e.id);
    expect(ids[4] - ids[0]).toBe(4); // the newest five
    await op.call(Op.SET_AUDIT_CONFIG, { max_entries: 10_000, log_syscalls: false });
  });
});

describe('audit log across a kernel restart', () => {
  const procs: KernelProcess[] = [];
  afterAll(async () => {
    for (const p of procs) await p.stop();
  });

  it('entries and configuration survive (same data dir)', async () => {
    const base = tempDir('clvaudp');
    const dataDir = path.join(base, 'data');
    const k1 = await startKernelProcess({ dataDir, socketPath: path.join(base, 'k1.sock') });
    procs.push(k1);
    const c1 = await k1.client();
    await c1.call(Op.SET_AUDIT_CONFIG, { log_syscalls: true, max_entries: 777 });
    await c1.call(Op.STORE, { key: 'before-restart', value: 'yes' });
    const before = await c1.call<Log>(Op.GET_AUDIT_LOG, { limit: 1000 });
    expect(before.entries.some((e) => e.details.syscall === 'STORE')).toBe(true);
    expect((await k1.stop('SIGTERM')).code).toBe(0);

    const k2 = await startKernelProcess({ dataDir, socketPath: path.join(base, 'k2.sock') });
    procs.push(k2);
    const c2 = await k2.client();
    const after = await c2.call<Log>(Op.GET_AUDIT_LOG, { limit: 1000 });
    // Everything the first kernel wrote is there, ids unchanged, and the new kernel goes on after them.
    const old = new Map(after.entries.map((e) => [e.id, e]));
    for (const e of before.entries) expect(old.get(e.id)).toEqual(e);
    const change = before.entries.find((e) => e.event_type === 'AUDIT_CONFIG_CHANGED')!;
    expect(change.details.new_config).toMatchObject({ log_syscalls: true, max_entries: 777 });
    // The configuration too: syscalls are still logged, and the bound is the one set.
    expect(after.entries.at(-1)!.id).toBeGreaterThan(before.entries.at(-1)!.id);
    const cfg = await c2.call<{ config: Record<string, unknown> }>(Op.SET_AUDIT_CONFIG, {});
    expect(cfg.config).toMatchObject({ log_syscalls: true, max_entries: 777 });
    await k2.stop('SIGTERM');
    fs.rmSync(base, { recursive: true, force: true });
  });
});
