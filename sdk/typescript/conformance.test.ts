/**
 * The shared SDK conformance suite (sdk/conformance/cases.json) against the TypeScript SDK and a real
 * kernel. The Python SDK runs the same file in sdk/python/tests/test_conformance.py.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, type TestKernel } from '../../harness/kernel.js';
import { CloveClient, KernelError } from './client.js';

interface Step {
  client: 'a' | 'b';
  op: string;
  args?: Record<string, unknown>;
  expect?: unknown;
  error?: string;
}
interface Case {
  name: string;
  b_name?: string;
  steps: Step[];
}

const suite = JSON.parse(
  fs.readFileSync(path.join(import.meta.dirname, '..', 'conformance', 'cases.json'), 'utf8'),
) as { cases: Case[] };

/** SDK-neutral operation → TypeScript SDK call. */
// Case arguments are untyped JSON from cases.json.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const OPS: Record<string, (c: CloveClient, a: Record<string, any>) => Promise<unknown>> = {
  hello: (c) => c.hello(),
  echo: async (c, a) => ({ data: await c.echo(a.data) }),
  register: (c, a) => c.register(a.name),
  send: (c, a) => c.send(a.to_name, a.message),
  recv: (c, a) => c.recv({ max: a.max, timeoutMs: a.timeout_ms }),
  store: (c, a) => c.store(a.key, a.value, { scope: a.scope, ttl: a.ttl }),
  fetch: (c, a) => c.fetch(a.key, a.scope),
  delete: (c, a) => c.delete(a.key, a.scope),
  keys: (c, a) => c.keys(a.prefix),
  subscribe: (c, a) => c.subscribe(a.events),
  poll: (c, a) => c.pollEvents({ max: a.max, timeoutMs: a.timeout_ms }),
  emit: (c, a) => c.emit(a.event, a.data),
  kill: (c, a) => c.kill(a.name),
};

function subst<T>(v: T, suffix: string): T {
  return JSON.parse(JSON.stringify(v).replaceAll('$name', suffix)) as T;
}

/** Subset match: objects recursively, arrays element-wise (same length), scalars by equality. */
function subset(expected: unknown): unknown {
  if (Array.isArray(expected)) return expected.map(subset);
  if (expected && typeof expected === 'object') {
    return expect.objectContaining(
      Object.fromEntries(Object.entries(expected).map(([k, v]) => [k, subset(v)])),
    );
  }
  return expected;
}

let tk: TestKernel;
beforeAll(async () => {
  tk = await startKernel();
});
afterAll(async () => tk?.stop());

describe('SDK conformance: TypeScript', () => {
  suite.cases.forEach((raw, i) => {
    it(raw.name, async () => {
      const c = subst(raw, `ts${i}`);
      const clients = { a: await tk.client(), b: await tk.client() };
      if (c.b_name) await clients.b.register(c.b_name);
      for (const s of c.steps) {
        const call = OPS[s.op];
        expect(call, `operation ${s.op}`).toBeDefined();
        if (s.error) {
          const err = await call(clients[s.client], s.args ?? {}).then(
            () => null,
            (e: unknown) => e,
          );
          expect(err).toBeInstanceOf(KernelError);
          expect((err as KernelError).code).toBe(s.error);
        } else {
          const reply = await call(clients[s.client], s.args ?? {});
          if (s.expect !== undefined) expect(reply).toEqual(subset(s.expect));
        }
      }
      clients.a.close();
      clients.b.close();
    });
  });
});
