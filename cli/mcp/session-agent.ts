/**
 * The session agent of `clove mcp` (docs/mcp.md): a program the kernel runs as an ordinary sandboxed
 * agent, with the rights the operator's policy gives it. It makes the MCP session's syscalls as
 * itself, so the kernel checks them against its rights, counts them against its quotas and audits them
 * under its name: an MCP client never holds the operator's rights for what this agent does.
 *
 * It serves only the `clove mcp` process that spawned it: requests come as messages from the operator
 * connection whose id the kernel-stamped `from` of a message proves (`MCP_SESSION_OWNER`, ids are never
 * reused), each `{clove_mcp: "call", id, op, args}`; the kernel's reply goes back as
 * `{clove_mcp: "reply", id, reply}`. Messages from anybody else are kept (bounded) for the session's
 * `receive_messages` tool. It exits when its owner has not been heard from for OWNER_TIMEOUT_MS.
 */
import { Op, type OpName } from '../../protocol/index.js';
import { CloveClient, type PushedMessage } from '../../sdk/typescript/client.js';

/** What the session may ask this agent to call (anything else is refused here, before the kernel). */
export const RELAYED: ReadonlySet<OpName> = new Set<OpName>([
  'SPAWN',
  'KILL',
  'RESTART',
  'LIST',
  'SEND',
  'GET_PERMS',
  'EXEC',
  'READ',
  'WRITE',
  'HTTP',
  'THINK',
  'STORE',
  'FETCH',
  'MCP_LIST_TOOLS',
  'MCP_CALL',
]);
/** The largest reply sent back in one message (the kernel's frames carry at most 1 MiB by default). */
export const MAX_REPLY_BYTES = 900 * 1024;
/** How long the agent stays without a word from its owner (who pings every 10 s). */
const OWNER_TIMEOUT_MS = 45_000;
/** Connections making syscalls at once: a slow EXEC does not hold up a READ. */
const WORKERS = 4;
/** Messages from other agents kept for `receive_messages`, and their bytes. */
const INBOX_MESSAGES = 256;
const INBOX_BYTES = 1024 * 1024;

/** A request of the session, as the owner sends it. */
interface CallMessage {
  clove_mcp: 'call';
  id: number;
  op: string;
  args?: Record<string, unknown>;
}

/** Serializes an object, or an error reply saying it is too large to carry. */
function bounded(id: number, reply: unknown, op: string): string {
  const text = JSON.stringify({ clove_mcp: 'reply', id, reply });
  if (Buffer.byteLength(text) <= MAX_REPLY_BYTES) return text;
  return JSON.stringify({
    clove_mcp: 'reply',
    id,
    reply: {
      success: false,
      code: 'too_large',
      error: `the reply of ${op} is ${Buffer.byteLength(text)} bytes, more than an MCP session carries (${MAX_REPLY_BYTES}); ask for less (max_bytes, max_output, max_response_bytes)`,
    },
  });
}

/** Runs the agent until its owner goes away (or the kernel closes its connection). */
async function main(): Promise<void> {
  const owner = Number(process.env.MCP_SESSION_OWNER);
  if (!Number.isInteger(owner) || owner <= 0) {
    console.error('clove mcp session agent: MCP_SESSION_OWNER is not an id');
    process.exit(2);
  }
  const control = await CloveClient.connect({ reconnect: false });
  const me = await control.hello();
  console.log(`MCP session agent ${me.name} (${me.agent_id}) serving operator connection ${owner}`);

  const idle: CloveClient[] = [];
  let opened = 0;
  const queue: (() => void)[] = [];
  /** A worker connection: an idle one, a new one (up to WORKERS), or the next to come free. */
  async function worker(): Promise<CloveClient> {
    const w = idle.pop();
    if (w) return w;
    if (opened < WORKERS) {
      opened++;
      try {
        return await CloveClient.connect({ reconnect: false });
      } catch (e) {
        opened--;
        throw e;
      }
    }
    await new Promise<void>((r) => queue.push(r));
    return worker();
  }
  function release(w: CloveClient): void {
    idle.push(w);
    queue.shift()?.();
  }

  const inbox: PushedMessage[] = [];
  let inboxBytes = 0;
  let lastHeard = Date.now();
  const watch = setInterval(() => {
    if (Date.now() - lastHeard > OWNER_TIMEOUT_MS) {
      console.log(`owner ${owner} silent for ${OWNER_TIMEOUT_MS} ms: exiting`);
      process.exit(0);
    }
  }, 5000);
  watch.unref();

  async function reply(id: number, op: string, r: unknown): Promise<void> {
    const sent = JSON.parse(
      (await control.raw(Op.SEND, Buffer.from(`{"to":${owner},"message":${bounded(id, r, op)}}`))).toString(),
    ) as { success?: boolean; code?: string };
    if (sent.code === 'not_found') {
      console.log(`owner ${owner} is gone: exiting`);
      process.exit(0);
    }
  }

  /** One request of the session: a pseudo-op of this agent's own, or a syscall made as this agent. */
  async function serve(m: CallMessage): Promise<void> {
    let r: unknown;
    if (m.op === '@ping') r = { success: true, agent_id: me.agent_id, name: me.name };
    else if (m.op === '@inbox') {
      const max = Math.max(1, Math.min(Number(m.args?.max) || 50, INBOX_MESSAGES));
      const taken = inbox.splice(0, max);
      for (const t of taken) inboxBytes -= Buffer.byteLength(JSON.stringify(t));
      r = { success: true, messages: taken, count: taken.length, left: inbox.length };
    } else if (!RELAYED.has(m.op as OpName)) {
      r = { success: false, code: 'invalid_request', error: `${m.op} is not relayed by an MCP session` };
    } else {
      let w: CloveClient | undefined;
      try {
        w = await worker();
        r = JSON.parse((await w.raw(Op[m.op as OpName], m.args ?? {})).toString('utf8'));
      } catch (e) {
        // A connection that failed is dropped (the next call opens another); the session hears why.
        if (w) {
          w.close();
          opened--;
          w = undefined;
        }
        r = {
          success: false,
          code: 'internal',
          error: `${m.op} failed in the session agent: ${(e as Error).message}`,
        };
      } finally {
        if (w) release(w);
        else queue.shift()?.();
      }
    }
    await reply(m.id, m.op, r);
  }

  for await (const msg of control.messages()) {
    const body = msg.message as Partial<CallMessage> | null;
    if (msg.from !== owner) {
      // Somebody else's message for the session: kept for receive_messages, the oldest dropped.
      inbox.push(msg);
      inboxBytes += Buffer.byteLength(JSON.stringify(msg));
      while (inbox.length > INBOX_MESSAGES || inboxBytes > INBOX_BYTES)
        inboxBytes -= Buffer.byteLength(JSON.stringify(inbox.shift()));
      continue;
    }
    lastHeard = Date.now();
    if (body?.clove_mcp !== 'call' || typeof body.id !== 'number' || typeof body.op !== 'string') continue;
    void serve(body as CallMessage).catch((e: unknown) =>
      console.error(`cannot answer request ${body.id}: ${(e as Error).message}`),
    );
  }
}

await main().catch((e: unknown) => {
  console.error(`clove mcp session agent: ${(e as Error).message}`);
  process.exit(1);
});
