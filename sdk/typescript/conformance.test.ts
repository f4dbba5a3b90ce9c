/**
 * The shared SDK conformance suite (sdk/conformance/cases.json) against the TypeScript SDK and a real
 * kernel. The Python SDK runs the same file in sdk/python/tests/test_conformance.py.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { OPCODES } from '../../protocol/index.js';
import { startKernel, type TestKernel } from '../../harness/kernel.js';
import { CloveClient, KernelError } from './client.js';
import type { PushedMessage } from './types.js';

interface Step {
  client: 'a' | 'b';
  op: string;
  args?: Record<string, unknown>;
  expect?: unknown;
  error?: string;
  /** variable name → dotted path in the reply */
  save?: Record<string, string>;
}
interface Case {
  name: string;
  b_name?: string;
  steps: Step[];
}

const CONFORMANCE = path.join(import.meta.dirname, '..', 'conformance');
const AGENTS = path.join(CONFORMANCE, 'agents');
const suite = JSON.parse(fs.readFileSync(path.join(CONFORMANCE, 'cases.json'), 'utf8')) as {
  operations: Record<string, string>;
  cases: Case[];
};

/**
 * The first message pushed to `c` (opting in on first use), or what the mapping check's recording stand-in
 * returned (`recorded`). The iterator is closed after one message, so the ones after it wait for the next.
 */
async function firstPush(
  c: CloveClient,
  a: { timeout_ms?: number },
): Promise<{ m: PushedMessage } | { recorded: unknown }> {
  const it = c.messages() as AsyncGenerator<PushedMessage> | Promise<unknown>;
  if (it instanceof Promise) return { recorded: await it };
  const timeout = new Promise<never>((_r, j) =>
    setTimeout(() => j(new Error('no message pushed in time')), a.timeout_ms ?? 10_000).unref(),
  );
  try {
    return { m: (await Promise.race([it.next(), timeout])).value as PushedMessage };
  } finally {
    void it.return(undefined);
  }
}

/** A pushed message as the suite compares it: `kind` and RECV's fields (read through their getters). */
function pushedFields(m: PushedMessage): Record<string, unknown> {
  const { from, from_name, message, age_ms, seq } = m;
  return { kind: 'message', from, from_name, message, age_ms, seq };
}

/** Contract opcode → TypeScript SDK call (the client method named in the contract's `sdk.typescript`). */
// Case arguments are untyped JSON from cases.json.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Call = (c: CloveClient, a: Record<string, any>) => Promise<unknown>;
const OPS: Record<string, Call> = {
  NOOP: async (c, a) => ({ data: await c.echo(a.data) }),
  HELLO: (c) => c.hello(),
  // The TS SDK returns EXIT's raw text; normalised to what both SDKs can say.
  EXIT: async (c) => ({ ok: (await c.exit()) === 'goodbye' }),
  HEARTBEAT: (c) => c.heartbeat(),
  SPAWN: (c, a) => c.spawn({ name: a.name, script: a.script, budgets: a.budgets, node: a.node }),
  KILL: (c, a) => c.kill(a.name),
  RESTART: (c, a) => c.restart(a.name),
  LIST: (c, a) => c.list(a.all_nodes ? { all_nodes: true } : {}),
  PAUSE: (c, a) => c.pause(a.name),
  RESUME: (c, a) => c.resume(a.name),
  SEND: (c, a) => c.send(a.to_name, a.message),
  SEND_BATCH: (c, a) => c.sendBatch(a.messages, a.results ? { results: a.results } : {}),
  PUSH: async (c, a) => {
    const r = await firstPush(c, a);
    return 'recorded' in r ? r.recorded : pushedFields(r.m);
  },
  PUSH_BINARY: async (c, a) => {
    const r = await firstPush(c, a);
    if ('recorded' in r) return r.recorded;
    if (!r.m.bytes)
      throw new Error('pushed message without bytes: the kernel did not push the binary envelope');
    return { ...pushedFields(r.m), bytes: r.m.bytes.toString('utf8') };
  },
  SEND_REFUSED: (c, a) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no SEND_REFUSED in time')), a.timeout_ms ?? 10_000);
      let taken = false;
      const r = c.onRefused((refusal) => {
        if (taken) return;
        taken = true;
        clearTimeout(timer);
        resolve(refusal);
      }) as unknown;
      if (r instanceof Promise) {
        // The mapping check's recording stand-in.
        clearTimeout(timer);
        void r.then(resolve);
      }
    }),
  RECV: (c, a) => c.recv({ max: a.max, timeoutMs: a.timeout_ms }),
  BROADCAST: (c, a) => c.broadcast(a.message, a.include_self ?? false),
  REGISTER: (c, a) => c.register(a.name),
  STORE: (c, a) => c.store(a.key, a.value, { scope: a.scope, ttl: a.ttl }),
  FETCH: (c, a) => c.fetch(a.key, a.scope),
  DELETE: (c, a) => c.delete(a.key, a.scope),
  KEYS: (c, a) => c.keys(a.prefix),
  TASK_CREATE: (c, a) => c.taskCreate(a.description, { subtasks: a.subtasks, pool: a.pool }),
  TASK_ASSIGN: (c, a) =>
    c.taskAssign(a.task_id, { agent_name: a.agent_name, subtask: a.subtask, payload: a.payload }),
  TASK_STATUS: (c, a) => c.taskStatus(a.task_id),
  TASK_COMPLETE: (c, a) =>
    c.taskComplete(a.task_id, { subtask_id: a.subtask_id, result: a.result, error: a.error }),
  TASK_LIST: (c, a) => c.taskList({ status: a.status, mine: a.mine }),
  GET_PERMS: (c, a) => c.getPerms(a.agent_id),
  SET_PERMS: (c, a) => c.setPerms(a.agent_id, a.level ?? a.permissions),
  SUBSCRIBE: (c, a) => c.subscribe(a.events),
  UNSUBSCRIBE: (c, a) => c.unsubscribe(a.all ? 'all' : a.events),
  POLL_EVENTS: (c, a) => c.pollEvents({ max: a.max, timeoutMs: a.timeout_ms }),
  EMIT: (c, a) => c.emit(a.event, a.data),
  METRICS_SYSTEM: (c) => c.systemMetrics(),
  ASYNC_RESULTS: (c, a) => c.asyncResults({ max: a.max, timeoutMs: a.timeout_ms }),
  METRICS_AGENT: (c, a) => c.agentMetrics(a.agent_id),
  METRICS_ALL_AGENTS: (c) => c.allAgentMetrics(),
  CLUSTER_NODES: (c) => c.clusterNodes(),
  CLUSTER_STATUS: (c) => c.clusterStatus(),
  TUNNEL_CONNECT: (c, a) => c.tunnelConnect(a as never),
  TUNNEL_DISCONNECT: (c) => c.tunnelDisconnect(),
  TUNNEL_STATUS: (c) => c.tunnelStatus(),
  TUNNEL_LIST_REMOTES: (c) => c.tunnelListRemotes(),
  TUNNEL_CONFIG: (c, a) => c.tunnelConfig(a as never),
  WORLD_CREATE: (c, a) => c.worldCreate({ name: a.name, config: a.config }),
  WORLD_DESTROY: (c, a) => c.worldDestroy({ world_id: a.world_id, force: a.force }),
  WORLD_LIST: (c) => c.worldList(),
  WORLD_JOIN: (c, a) => c.worldJoin({ world_id: a.world_id, agent_id: a.agent_id }),
  WORLD_LEAVE: (c, a) => c.worldLeave({ agent_id: a.agent_id }),
  WORLD_EVENT: (c, a) =>
    c.worldEvent({ world_id: a.world_id, event_type: a.event_type, params: a.params, clear: a.clear }),
  WORLD_STATE: (c, a) => c.worldState({ world_id: a.world_id }),
  WORLD_SNAPSHOT: (c, a) => c.worldSnapshot({ world_id: a.world_id }),
  WORLD_RESTORE: (c, a) => c.worldRestore({ snapshot: a.snapshot, new_world_id: a.new_world_id }),
  METRICS_CGROUP: (c, a) => c.cgroupMetrics(a.cgroup_path),
  SET_QUOTA: (c, a) => c.setQuota(a),
  GET_QUOTA: (c, a) => c.getQuota(a),
  EXEC: (c, a) => c.exec({ command: a.command }),
  READ: (c, a) => c.readFile({ path: a.path }),
  WRITE: (c, a) => c.writeFile({ path: a.path, content: a.content }),
  HTTP: (c, a) => c.http({ url: a.url, method: a.method }),
  THINK: (c, a) => c.think({ prompt: a.prompt }),
  LLM_REPORT: (c, a) => c.llmReport({ tokens: a.tokens }),
  THINK_STREAM: async (c, a) => {
    const s = c.thinkStream({ prompt: a.prompt }) as
      ReturnType<CloveClient['thinkStream']> | Promise<unknown>;
    if (s instanceof Promise) return s; // the mapping check's recording stand-in
    return s.result;
  },
  THINK_STREAM_NEXT: (c, a) => c.thinkStreamNext(a.stream_id, a.wait_ms),
  THINK_STREAM_CANCEL: (c, a) => c.thinkStreamCancel(a.stream_id),
  MCP_LIST_TOOLS: (c, a) => c.mcpListTools(a.server === undefined ? {} : { server: a.server }),
  MCP_CALL: (c, a) => c.mcpCall({ server: a.server, tool: a.tool, arguments: a.arguments }),
  GET_AUDIT_LOG: (c, a) => c.getAuditLog({ category: a.category, limit: a.limit }),
  SET_AUDIT_CONFIG: (c, a) => c.setAuditConfig(a),
  RECORD_START: (c) => c.startRecording({}),
  RECORD_STOP: (c) => c.stopRecording(),
  RECORD_STATUS: (c, a) => c.recordingStatus({ export: a.export }),
  REPLAY_START: (c, a) => c.startReplay({ recording_data: a.recording_data }),
  REPLAY_STATUS: (c) => c.replayStatus(),
  STEP_BEGIN: (c, a) => c.stepBegin({ key: a.key, fresh: a.fresh, on_divergence: a.on_divergence }),
  STEP_END: (c, a) => c.stepEnd({ key: a.key, complete: a.complete, clear: a.clear }),
  STEP_STATUS: (c, a) => c.stepStatus({ key: a.key, agent_id: a.agent_id, name: a.name }),
  STEP_CLEAR: (c, a) => c.stepClear({ key: a.key, agent_id: a.agent_id, name: a.name }),
};

/** `$agents` and `$name` in every string of a case. */
function subst<T>(v: T, suffix: string): T {
  if (typeof v === 'string') return v.replaceAll('$agents', AGENTS).replaceAll('$name', suffix) as T;
  if (Array.isArray(v)) return v.map((x: unknown) => subst(x, suffix)) as T;
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, subst(x, suffix)])) as T;
  }
  return v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** `{"$var": name}` anywhere in `v` → the value a previous step saved under that name. */
function resolveVars(v: unknown, vars: Map<string, unknown>): unknown {
  if (Array.isArray(v)) return v.map((x) => resolveVars(x, vars));
  if (isObject(v)) {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === '$var') {
      const name = v.$var as string;
      if (!vars.has(name)) throw new Error(`$var ${name} was not saved by an earlier step`);
      return vars.get(name);
    }
    return Object.fromEntries(keys.map((k) => [k, resolveVars(v[k], vars)]));
  }
  return v;
}

/**
 * The suite's subset match (the same rules as the Python runner): objects recursively (only an object
 * matches an object), arrays element-wise with the same length, `{"$contains": x}` an array with an
 * element matching x, scalars by strict equality. Returns where the first mismatch is, or null.
 */
function mismatch(expected: unknown, got: unknown, at = '$'): string | null {
  if (isObject(expected)) {
    const keys = Object.keys(expected);
    if (keys.length === 1 && keys[0] === '$contains') {
      if (!Array.isArray(got)) return `${at}: expected an array, got ${JSON.stringify(got)}`;
      return got.some((g) => mismatch(expected.$contains, g, at) === null)
        ? null
        : `${at}: no element matches ${JSON.stringify(expected.$contains)}`;
    }
    if (!isObject(got)) return `${at}: expected an object, got ${JSON.stringify(got)}`;
    for (const k of keys) {
      if (!(k in got)) return `${at}.${k}: missing`;
      const m = mismatch(expected[k], got[k], `${at}.${k}`);
      if (m) return m;
    }
    return null;
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(got) || got.length !== expected.length) {
      return `${at}: expected an array of ${expected.length}, got ${JSON.stringify(got)}`;
    }
    for (let i = 0; i < expected.length; i++) {
      const m = mismatch(expected[i], got[i], `${at}[${i}]`);
      if (m) return m;
    }
    return null;
  }
  return expected === got ? null : `${at}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)}`;
}

function pick(reply: unknown, dotted: string): unknown {
  let v: unknown = reply;
  for (const k of dotted.split('.')) v = isObject(v) ? v[k] : undefined;
  return v;
}

describe('SDK conformance: coverage', () => {
  const used = new Set(suite.cases.flatMap((c) => c.steps.map((s) => s.op)));

  it('every implemented opcode of the contract has a case', () => {
    const implemented = OPCODES.filter((o) => o.status === 'implemented').map((o) => o.name);
    expect(implemented.length).toBeGreaterThan(0);
    expect(implemented.filter((n) => !used.has(n))).toEqual([]);
  });

  it('every op of cases.json is a contract opcode, documented, and mapped to its SDK method', async () => {
    const contract = new Map(OPCODES.map((o) => [o.name as string, o]));
    expect([...used].filter((op) => !contract.has(op))).toEqual([]);
    expect([...used].filter((op) => !(op in OPS))).toEqual([]);
    expect([...used].filter((op) => !(op in suite.operations))).toEqual([]);
    // Each mapping must go through the client method the contract names: run it on a recording stand-in.
    for (const [op, call] of Object.entries(OPS)) {
      const method = contract.get(op)?.sdk.typescript;
      expect(method, `${op} is not a contract opcode`).toBeDefined();
      expect(typeof (CloveClient.prototype as unknown as Record<string, unknown>)[method!]).toBe('function');
      const calls: string[] = [];
      const recorder = new Proxy(
        {},
        {
          get:
            (_t, prop) =>
            (...args: unknown[]) => (calls.push(String(prop)), Promise.resolve(args)),
        },
      ) as CloveClient;
      await call(recorder, {});
      expect(calls, op).toEqual([method]);
    }
  });
});

// Both paths of the kernel: the TypeScript one, and the native fast path (docs/fastpath.md).
describe.each([
  ['TypeScript path', false],
  ['native fast path', true],
] as const)('SDK conformance: TypeScript SDK, kernel on the %s', (_label, fastPath) => {
  let tk: TestKernel;
  beforeAll(async () => {
    tk = await startKernel({ fastPath });
  });
  afterAll(async () => tk?.stop());

  suite.cases.forEach((raw, i) => {
    it(raw.name, async () => {
      const c = subst(raw, `ts${i}`);
      const clients = { a: await tk.client(), b: await tk.client() };
      const vars = new Map<string, unknown>();
      const spawned = new Set<string>();
      try {
        if (c.b_name) await clients.b.register(c.b_name);
        for (const s of c.steps) {
          const call = OPS[s.op];
          expect(call, `operation ${s.op}`).toBeDefined();
          const args = resolveVars(s.args ?? {}, vars) as Record<string, unknown>;
          if (s.error) {
            const err = await call(clients[s.client], args).then(
              () => null,
              (e: unknown) => e,
            );
            expect(err, `${s.op} must fail with ${s.error}`).toBeInstanceOf(KernelError);
            expect((err as KernelError).code, s.op).toBe(s.error);
          } else {
            const reply = await call(clients[s.client], args);
            if (s.op === 'SPAWN') spawned.add(args.name as string);
            if (s.op === 'KILL') spawned.delete(args.name as string);
            if (s.expect !== undefined) {
              expect(
                mismatch(resolveVars(s.expect, vars), reply),
                `${s.op}: ${JSON.stringify(reply)}`,
              ).toBeNull();
            }
            for (const [name, p] of Object.entries(s.save ?? {})) {
              const v = pick(reply, p);
              expect(v == null, `${s.op}: nothing at ${p} to save as ${name}: ${JSON.stringify(reply)}`).toBe(
                false,
              );
              vars.set(name, v);
            }
          }
        }
      } finally {
        // A failed case must not leave its agents running in the shared kernel.
        for (const name of spawned) await clients.a.kill(name, { grace_ms: 0 }).catch(() => undefined);
        clients.a.close();
        clients.b.close();
      }
    });
  });
});
