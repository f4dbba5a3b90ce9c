/**
 * The API's OpenAPI 3.1 document (`GET /api/v1/openapi.json`), generated from data: the route table
 * below says which opcode each route runs, and the bodies of those routes are the contract's own
 * request and reply schemas (protocol/wire.json, protocol/families/*.json, read once), with its `$defs`
 * as the document's components. The shapes only the API has (agent rows, services, events, errors) are
 * written here once. api.test.ts checks that every route of the app is in the document and back.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ERROR_CODES, type OpName } from '../../protocol/index.js';
import { REPO_ROOT } from '../config.js';
import { KERNEL_VERSION } from '../version.js';

type Schema = Record<string, unknown>;

export interface RouteDoc {
  method: 'get' | 'post';
  /** Hono's form (`:id`); the document uses OpenAPI's (`{id}`). */
  path: string;
  summary: string;
  /** The opcode the route runs, whose contract schemas are its request body and reply. */
  op?: OpName;
  /** A request body: the op's request (`op`), the op's request but for the target (`op-target`), or a schema. */
  body?: 'op' | 'op-target' | Schema;
  /** The reply (200 unless `status`): the op's reply (`op`) or a schema. */
  reply: 'op' | Schema;
  status?: number;
  query?: { name: string; description: string; schema: Schema }[];
  /** No bearer token needed. */
  open?: boolean;
  contentType?: string;
}

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const int = { type: 'integer' };

/** Every route of the API (the app registers the same list: api.test.ts holds them together). */
export const ROUTES: RouteDoc[] = [
  { method: 'get', path: '/healthz', summary: 'the process is up', reply: ref('Status'), open: true },
  {
    method: 'get',
    path: '/readyz',
    summary: 'the kernel accepts calls (listening, not shutting down); 503 otherwise',
    reply: ref('Status'),
    open: true,
  },
  { method: 'get', path: '/api/v1/openapi.json', summary: 'this document', reply: { type: 'object' } },
  {
    method: 'get',
    path: '/api/v1/agents',
    summary: 'every agent, with its metrics (LIST joined with METRICS_ALL_AGENTS)',
    reply: { type: 'array', items: ref('AgentRow') },
  },
  {
    method: 'post',
    path: '/api/v1/agents',
    summary: 'spawn an agent',
    op: 'SPAWN',
    body: 'op',
    reply: 'op',
    status: 201,
  },
  {
    method: 'get',
    path: '/api/v1/agents/:id',
    summary: 'one agent by id or name',
    reply: ref('AgentRow'),
  },
  ...(['KILL', 'RESTART', 'PAUSE', 'RESUME'] as const).map((op): RouteDoc => ({
    method: 'post',
    path: `/api/v1/agents/:id/${op.toLowerCase()}`,
    summary: `${op} the agent (optional body: the rest of the ${op} request)`,
    op,
    body: 'op-target',
    reply: 'op',
  })),
  {
    method: 'get',
    path: '/api/v1/agents/:id/logs',
    summary: "the last lines of the agent's log",
    query: [
      {
        name: 'tail',
        description: 'lines (1-10000, default 100)',
        schema: { ...int, minimum: 1, maximum: 10000 },
      },
    ],
    reply: ref('Logs'),
  },
  {
    method: 'get',
    path: '/api/v1/services',
    summary: 'agents grouped by their clove.project and clove.service labels',
    reply: { type: 'array', items: ref('Service') },
  },
  {
    method: 'post',
    path: '/api/v1/services/:project/:service/scale',
    summary: "set a replicated service's replica count (spawns from an existing replica, stops the highest)",
    body: {
      type: 'object',
      required: ['replicas'],
      properties: { replicas: { ...int, minimum: 0, maximum: 1000 } },
    },
    reply: ref('ScaleResult'),
  },
  {
    method: 'get',
    path: '/api/v1/events',
    summary: 'kernel events after a sequence number (the newest 1000 are kept)',
    query: [
      { name: 'since', description: 'events with a greater seq (default 0)', schema: { ...int, minimum: 0 } },
      {
        name: 'limit',
        description: 'at most this many (1-1000, default 100)',
        schema: { ...int, minimum: 1, maximum: 1000 },
      },
    ],
    reply: ref('Events'),
  },
  {
    method: 'get',
    path: '/api/v1/system',
    summary: 'host metrics (METRICS_SYSTEM) and the kernel',
    op: 'METRICS_SYSTEM',
    reply: {
      type: 'object',
      required: ['kernel', 'system'],
      properties: { kernel: { type: 'object' }, system: ref('SystemMetrics') },
    },
  },
  {
    method: 'get',
    path: '/api/v1/stream',
    summary:
      'WebSocket (subprotocols `clove`, `bearer.<token>`): {"type":"event","event":Event} as events happen, {"type":"metrics","ts","system","agents"} every second; 426 without Upgrade',
    reply: ref('StreamMessage'),
    status: 101,
  },
  {
    method: 'get',
    path: '/metrics',
    summary: 'Prometheus text exposition (docs/http.md "Metrics")',
    reply: { type: 'string' },
    contentType: 'text/plain',
  },
];

/** The shapes only the API has. */
const API_SCHEMAS: Record<string, Schema> = {
  Status: { type: 'object', required: ['status'], properties: { status: { type: 'string' } } },
  Error: {
    type: 'object',
    required: ['error', 'message'],
    properties: {
      error: { type: 'string', enum: [...ERROR_CODES, 'unauthorized'] },
      message: { type: 'string' },
    },
  },
  AgentRow: {
    type: 'object',
    required: ['id', 'name', 'state', 'pid', 'node', 'restarts', 'labels', 'cpu_percent', 'memory_bytes'],
    properties: {
      id: int,
      name: { type: 'string' },
      state: ref('AgentState'),
      pid: int,
      node: { type: ['string', 'null'] },
      restarts: int,
      restart_policy: { type: 'string' },
      uptime_ms: int,
      ready: { type: 'boolean' },
      labels: ref('Labels'),
      exit_code: { type: ['integer', 'null'] },
      exit_reason: { type: ['string', 'null'] },
      cpu_percent: { type: 'number', description: 'of one core, since the previous look' },
      cpu_seconds: { type: 'number' },
      memory_bytes: int,
      messages_in: int,
      messages_out: int,
      syscalls: int,
      mailbox_depth: int,
      quotas: {
        type: 'object',
        additionalProperties: {
          type: 'object',
          required: ['used'],
          properties: { used: { type: 'number' }, limit: { type: 'number' }, exceeded: { type: 'boolean' } },
        },
      },
    },
  },
  Logs: {
    type: 'object',
    required: ['agent_id', 'name', 'lines'],
    properties: {
      agent_id: int,
      name: { type: 'string' },
      lines: { type: 'array', items: { type: 'string' } },
    },
  },
  Service: {
    type: 'object',
    required: ['project', 'service', 'replicas', 'running', 'agents'],
    properties: {
      project: { type: 'string' },
      service: { type: 'string' },
      replicas: int,
      running: int,
      agents: { type: 'array', items: ref('AgentRow') },
    },
  },
  ScaleResult: {
    type: 'object',
    required: ['project', 'service', 'replicas', 'started', 'stopped'],
    properties: {
      project: { type: 'string' },
      service: { type: 'string' },
      replicas: int,
      started: { type: 'array', items: { type: 'string' } },
      stopped: { type: 'array', items: { type: 'string' } },
    },
  },
  Event: {
    type: 'object',
    required: ['seq', 'type', 'data', 'source_agent_id', 'timestamp'],
    properties: {
      seq: int,
      type: { type: 'string' },
      data: { type: 'object' },
      source_agent_id: int,
      timestamp: int,
    },
  },
  Events: {
    type: 'object',
    required: ['events', 'last_seq', 'oldest_seq'],
    properties: { events: { type: 'array', items: ref('Event') }, last_seq: int, oldest_seq: int },
  },
  StreamMessage: {
    oneOf: [
      {
        type: 'object',
        required: ['type', 'event'],
        properties: { type: { const: 'event' }, event: ref('Event') },
      },
      {
        type: 'object',
        required: ['type', 'ts', 'system', 'agents'],
        properties: {
          type: { const: 'metrics' },
          ts: int,
          system: ref('SystemMetrics'),
          agents: { type: 'array', items: ref('AgentRow') },
        },
      },
    ],
  },
};

interface Contract {
  defs: Record<string, Schema>;
  ops: Map<string, { request?: Schema; reply?: Schema; summary: string }>;
}

/** The contract's schemas, as protocol/generate.mjs reads them (wire.json, then every family). */
function loadContract(dir = path.join(REPO_ROOT, 'protocol')): Contract {
  const wire = JSON.parse(fs.readFileSync(path.join(dir, 'wire.json'), 'utf8'));
  const defs: Record<string, Schema> = { ...wire.$defs };
  const ops = new Map<string, { request?: Schema; reply?: Schema; summary: string }>();
  for (const f of fs
    .readdirSync(path.join(dir, 'families'))
    .filter((x) => x.endsWith('.json'))
    .sort()) {
    const fam = JSON.parse(fs.readFileSync(path.join(dir, 'families', f), 'utf8'));
    Object.assign(defs, fam.$defs ?? {});
    for (const o of fam.opcodes) ops.set(o.name, { request: o.request, reply: o.reply, summary: o.summary });
  }
  return { defs, ops };
}

/** A contract schema with its `#/$defs/X` references pointing at the document's components. */
function rebase<T>(s: T): T {
  return JSON.parse(JSON.stringify(s).replaceAll('"#/$defs/', '"#/components/schemas/'));
}

/** The request schema without the target (`id`, `name`): the route's `:id` names the agent. */
function withoutTarget(s: Schema): Schema {
  const props = { ...((s.properties as Record<string, unknown>) ?? {}) };
  delete props.id;
  delete props.name;
  return { ...s, properties: props };
}

let cached: Schema | undefined;

/** The document (built once per process: the contract does not change while the kernel runs). */
export function openApiDocument(): Schema {
  if (cached) return cached;
  const c = loadContract();
  const opOf = (r: RouteDoc) => {
    const o = r.op ? c.ops.get(r.op) : undefined;
    if (r.op && !o) throw new Error(`openapi: route ${r.path} names unknown opcode ${r.op}`);
    return o;
  };
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) {
    const o = opOf(r);
    const p = r.path.replace(/:([A-Za-z_]+)/g, '{$1}');
    const params = [...r.path.matchAll(/:([A-Za-z_]+)/g)].map(([, name]) => ({
      name,
      in: 'path',
      required: true,
      schema: { type: 'string' },
      ...(name === 'id' ? { description: 'agent id or name' } : {}),
    }));
    const query = (r.query ?? []).map((q) => ({
      name: q.name,
      in: 'query',
      description: q.description,
      schema: q.schema,
    }));
    const body =
      r.body === 'op' ? o!.request : r.body === 'op-target' ? withoutTarget(o!.request ?? {}) : r.body;
    const reply = r.reply === 'op' ? o!.reply : r.reply;
    const errors = r.open
      ? {}
      : {
          '4XX': { description: 'error', content: { 'application/json': { schema: ref('Error') } } },
          '5XX': { description: 'error', content: { 'application/json': { schema: ref('Error') } } },
        };
    (paths[p] ??= {})[r.method] = {
      summary: r.summary,
      operationId: `${r.method}${p.replace(/[^A-Za-z0-9]+(.)?/g, (_, ch: string | undefined) => (ch ?? '').toUpperCase())}`,
      ...(r.op ? { 'x-clove-opcode': r.op } : {}),
      ...(r.open ? { security: [] } : {}),
      ...(params.length || query.length ? { parameters: [...params, ...query] } : {}),
      ...(body
        ? {
            requestBody: {
              required: r.body !== 'op-target',
              content: { 'application/json': { schema: rebase(body) } },
            },
          }
        : {}),
      responses: {
        [String(r.status ?? 200)]: {
          description: r.summary,
          content: { [r.contentType ?? 'application/json']: { schema: rebase(reply) } },
        },
        ...errors,
      },
    };
  }
  cached = {
    openapi: '3.1.0',
    info: {
      title: 'Clove kernel HTTP API',
      version: KERNEL_VERSION,
      description:
        'docs/http.md. Bodies of routes that run a syscall are the contract schemas of its opcode (x-clove-opcode).',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    servers: [{ url: '/' }],
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: '<data-dir>/http-token' } },
      schemas: { ...rebase(c.defs), ...API_SCHEMAS },
    },
  };
  return cached;
}
