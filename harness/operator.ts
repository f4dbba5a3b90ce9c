/**
 * What tests ask of a kernel through an operator client about one agent: its LIST entry, and a question
 * answered by an agent that replies to every message with one of its own (the supervision tests' agents).
 */
import type { CloveClient } from '../sdk/typescript/client.js';
import type { AgentInfo } from '../protocol/index.js';
import { until } from './kernel.js';

/** The agent's LIST entry; throws when it is not listed. */
export async function listed(op: CloveClient, name: string): Promise<AgentInfo> {
  const a = (await op.list()).find((x) => x.name === name);
  if (!a) throw new Error(`${name} not listed`);
  return a;
}

/** Sends `{q: 1}` to the agent and returns the message it answers with (the first one received). */
export async function ask(
  op: CloveClient,
  name: string,
  timeoutMs = 10_000,
): Promise<Record<string, unknown>> {
  await op.send(name, { q: 1 });
  const r = await op.recv({ timeoutMs });
  const m = r.messages?.[0];
  if (!m) throw new Error(`${name} did not answer`);
  return m.message as Record<string, unknown>;
}

/** The agent's LIST entry once it is ready (said HELLO) and, with `notPid`, runs another process than that. */
export function readyAgent(op: CloveClient, name: string, what: string, notPid?: number): Promise<AgentInfo> {
  return until(
    async () => {
      const a = (await op.list()).find((x) => x.name === name);
      return a && a.ready && a.pid !== notPid ? a : undefined;
    },
    20_000,
    what,
  );
}
