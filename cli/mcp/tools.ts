/**
 * The tools `clove mcp` offers an MCP client (docs/mcp.md "Tools"), on the official SDK's McpServer,
 * with zod input schemas. Each tool is one kernel call through the Session: acting tools as the session
 * agent (its rights, quotas and audit), reading tools (agents, logs, events) as scoped by the policy. A
 * kernel refusal comes back as an MCP tool error naming the kernel's code and message; the reply, when
 * it succeeds, as JSON text and structured content.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import type { AgentInfo } from '../../protocol/index.js';
import { KernelError } from '../../sdk/typescript/client.js';
import type { Session } from './session.js';

/** Bytes of content the file, exec and http tools ask for unless told (an MCP answer is read by a model). */
const DEFAULT_BYTES = 256 * 1024;
/** The most they may ask for: what one message from the session agent carries, with room for JSON. */
const MAX_BYTES = 640 * 1024;

const agentRef = z
  .union([z.string().min(1), z.number().int().positive()])
  .describe('an agent name, or its id');
const LEVELS = ['unrestricted', 'standard', 'sandboxed', 'readonly', 'minimal'] as const;

/** A successful reply as an MCP result: its JSON as text, and as structured content. */
function ok(reply: unknown): CallToolResult {
  const structured = (
    reply && typeof reply === 'object' && !Array.isArray(reply) ? reply : { result: reply }
  ) as Record<string, unknown>;
  return { content: [{ type: 'text', text: JSON.stringify(reply, null, 2) }], structuredContent: structured };
}

/** A failure as an MCP tool error: `<code>: <message>`, the kernel's reply as structured content. */
function failure(e: unknown): CallToolResult {
  if (e instanceof KernelError) {
    const reply = { ...e.reply, success: false, code: e.code, error: e.message };
    return {
      isError: true,
      content: [{ type: 'text', text: `${e.code}: ${e.message}` }],
      structuredContent: reply,
    };
  }
  const msg = (e as Error)?.message ?? String(e);
  return {
    isError: true,
    content: [{ type: 'text', text: `unavailable: ${msg}` }],
    structuredContent: { success: false, code: 'unavailable', error: msg },
  };
}

/** Runs a tool body; whatever it throws becomes a tool error, never a protocol error. */
async function run(fn: () => Promise<unknown>): Promise<CallToolResult> {
  try {
    return ok(await fn());
  } catch (e) {
    return failure(e);
  }
}

/** The fields of an agent an MCP client is shown (no log path, no host details). */
function row(a: AgentInfo): Record<string, unknown> {
  return {
    id: a.id,
    name: a.name,
    state: a.state,
    pid: a.pid,
    restarts: a.restarts,
    restart_policy: a.restart_policy,
    uptime_ms: a.uptime_ms,
    parent_id: a.parent_id,
    labels: a.labels ?? {},
  };
}

/** Drops undefined fields (the kernel's defaults apply). */
function given(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** An McpServer with every tool of the session; one per MCP connection (stdio, or an HTTP session). */
export function buildServer(session: Session, version: string): McpServer {
  const server = new McpServer(
    { name: 'clove', version },
    {
      instructions:
        `Clove kernel tools. You act as the agent ${session.agentName} (id ${session.agentId}): what you may ` +
        `do is its rights (session_info shows them); the kernel checks, counts and audits every call. ` +
        `Agent tools see ${session.scope === 'all' ? 'every agent' : 'this session and the agents it spawned'}.`,
    },
  );

  server.registerTool(
    'session_info',
    {
      description:
        "This MCP session's agent, its rights (the operator's policy) and what the agent tools see",
      annotations: { readOnlyHint: true },
    },
    () =>
      run(async () => ({
        agent_id: session.agentId,
        name: session.agentName,
        scope: session.scope,
        ...(await session.act('GET_PERMS', {})),
      })),
  );

  server.registerTool(
    'list_agents',
    {
      description: 'The agents this session may see: id, name, state, pid, restarts, labels',
      annotations: { readOnlyHint: true },
    },
    () => run(async () => ({ agents: (await session.agents()).map(row) })),
  );

  server.registerTool(
    'spawn_agent',
    {
      description:
        "Starts a supervised, sandboxed agent (spawned by this session's agent: needs can_spawn; its rights never exceed the session's)",
      inputSchema: {
        script: z
          .string()
          .min(1)
          .describe('absolute path of the script: .py runs with python3, .js/.mjs with node'),
        name: z.string().min(1).max(64).optional().describe('default agent_<id>'),
        args: z.array(z.string()).max(256).optional(),
        env: z.record(z.string(), z.string()).optional(),
        permissions: z
          .union([z.enum(LEVELS), z.record(z.string(), z.unknown())])
          .optional()
          .describe("a level or a permissions object; default: the session agent's own rights"),
        restart_policy: z.enum(['never', 'always', 'on-failure']).optional(),
        labels: z.record(z.string(), z.string()).optional(),
      },
    },
    (a) => run(() => session.act('SPAWN', given(a))),
  );

  server.registerTool(
    'kill_agent',
    {
      description: 'Stops an agent for good (SIGTERM, SIGKILL after grace_ms)',
      inputSchema: { agent: agentRef, grace_ms: z.number().int().min(0).max(60_000).optional() },
      annotations: { destructiveHint: true },
    },
    (a) => run(() => session.lifecycle('KILL', a.agent, a.grace_ms)),
  );

  server.registerTool(
    'restart_agent',
    {
      description: 'Stops an agent and starts it again (same identity, new process)',
      inputSchema: { agent: agentRef, grace_ms: z.number().int().min(0).max(60_000).optional() },
    },
    (a) => run(() => session.lifecycle('RESTART', a.agent, a.grace_ms)),
  );

  server.registerTool(
    'send_message',
    {
      description: "Queues a message (any JSON) in an agent's mailbox, from this session's agent",
      inputSchema: { to: agentRef, message: z.unknown().describe('any JSON value') },
    },
    (a) =>
      run(() =>
        session.act('SEND', {
          ...(typeof a.to === 'number' || /^\d+$/.test(a.to) ? { to: Number(a.to) } : { to_name: a.to }),
          message: a.message ?? null,
        }),
      ),
  );

  server.registerTool(
    'receive_messages',
    {
      description: "Takes messages other agents sent to this session's agent (oldest first)",
      inputSchema: { max: z.number().int().min(1).max(256).optional() },
    },
    (a) => run(async () => checkedReply(await session.relay('@inbox', given({ max: a.max })))),
  );

  server.registerTool(
    'agent_logs',
    {
      description: "The last lines of an agent's log (its stdout and stderr)",
      inputSchema: { agent: agentRef, lines: z.number().int().min(1).max(2000).optional() },
      annotations: { readOnlyHint: true },
    },
    (a) => run(() => session.logs(a.agent, a.lines ?? 100)),
  );

  server.registerTool(
    'recent_events',
    {
      description:
        'Kernel events since this session started (agent spawned, exited, restarted, quota exceeded…)',
      inputSchema: {
        limit: z.number().int().min(1).max(1000).optional(),
        type: z.string().optional().describe('only events of this type, e.g. AGENT_EXITED'),
        agent: agentRef.optional().describe('only events about this agent'),
      },
      annotations: { readOnlyHint: true },
    },
    (a) =>
      run(async () => ({
        events: await session.recentEvents({ limit: a.limit ?? 100, type: a.type, agent: a.agent }),
      })),
  );

  server.registerTool(
    'exec',
    {
      description:
        "Runs a command inside this session's agent sandbox (needs can_exec and an exec allow list)",
      inputSchema: {
        command: z.string().min(1),
        cwd: z.string().optional(),
        timeout: z.number().positive().max(300).optional().describe('seconds (default 30)'),
        stdin: z.string().optional(),
        max_output: z.number().int().min(0).max(MAX_BYTES).optional(),
      },
    },
    (a) => run(() => session.act('EXEC', given({ ...a, max_output: a.max_output ?? DEFAULT_BYTES }))),
  );

  server.registerTool(
    'read_file',
    {
      description:
        "Reads a file as this session's agent sees it (its sandbox, its uid, its filesystem rights)",
      inputSchema: {
        path: z.string().min(1),
        max_bytes: z.number().int().min(0).max(MAX_BYTES).optional(),
        offset: z.number().int().min(0).optional(),
      },
      annotations: { readOnlyHint: true },
    },
    (a) => run(() => session.act('READ', given({ ...a, max_bytes: a.max_bytes ?? DEFAULT_BYTES }))),
  );

  server.registerTool(
    'write_file',
    {
      description: "Writes a file as this session's agent (its sandbox, its uid, its filesystem rights)",
      inputSchema: {
        path: z.string().min(1),
        content: z.string().max(MAX_BYTES),
        mode: z.enum(['write', 'append']).optional(),
      },
    },
    (a) => run(() => session.act('WRITE', given(a))),
  );

  server.registerTool(
    'http_request',
    {
      description:
        "An HTTP request made by the kernel for this session's agent (its network and method lists)",
      inputSchema: {
        url: z.string().min(1),
        method: z.string().optional(),
        headers: z.record(z.string(), z.string()).optional(),
        body: z.string().optional(),
        timeout: z.number().positive().max(300).optional().describe('seconds'),
        max_response_bytes: z.number().int().min(0).max(MAX_BYTES).optional(),
      },
    },
    (a) =>
      run(() =>
        session.act('HTTP', given({ ...a, max_response_bytes: a.max_response_bytes ?? DEFAULT_BYTES })),
      ),
  );

  server.registerTool(
    'think',
    {
      description:
        "A language-model call made by the kernel with the operator's provider (counted against the session's quotas)",
      inputSchema: {
        prompt: z.string().optional(),
        messages: z
          .array(z.object({ role: z.enum(['system', 'user', 'assistant']), content: z.string() }))
          .optional(),
        system_instruction: z.string().optional(),
        model: z.string().optional(),
        provider: z.string().optional(),
        max_tokens: z.number().int().min(0).optional(),
        temperature: z.number().optional(),
      },
    },
    (a) => run(() => session.act('THINK', given(a))),
  );

  server.registerTool(
    'store',
    {
      description: "Writes a key of the kernel's state store as this session's agent",
      inputSchema: {
        key: z.string().min(1),
        value: z.unknown().describe('any JSON value'),
        scope: z.enum(['global', 'agent', 'session']).optional(),
        ttl: z.number().positive().optional().describe('seconds'),
      },
    },
    (a) => run(() => session.act('STORE', given({ ...a, value: a.value ?? null }))),
  );

  server.registerTool(
    'fetch',
    {
      description: "Reads a key of the kernel's state store as this session's agent",
      inputSchema: { key: z.string().min(1), scope: z.enum(['global', 'agent', 'session']).optional() },
      annotations: { readOnlyHint: true },
    },
    (a) => run(() => session.act('FETCH', given(a))),
  );

  server.registerTool(
    'mcp_list_tools',
    {
      description: "The tools of the operator's MCP servers (mcp.json) this session's agent is granted",
      inputSchema: { server: z.string().optional() },
      annotations: { readOnlyHint: true },
    },
    (a) => run(() => session.act('MCP_LIST_TOOLS', given(a))),
  );

  server.registerTool(
    'mcp_call',
    {
      description: "Calls a tool of one of the operator's MCP servers through the kernel (permissions.mcp)",
      inputSchema: {
        server: z.string().min(1),
        tool: z.string().min(1),
        arguments: z.record(z.string(), z.unknown()).optional(),
      },
    },
    (a) => run(() => session.act('MCP_CALL', given(a))),
  );

  return server;
}

/** A relayed pseudo-op's reply, its error thrown like the kernel's. */
function checkedReply(r: Record<string, unknown>): Record<string, unknown> {
  if (r.success === false) throw new KernelError(String(r.error ?? 'failed'), String(r.code ?? 'unknown'), r);
  return r;
}
