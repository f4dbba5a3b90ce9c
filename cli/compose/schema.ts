/**
 * The JSON Schema of clove.yaml (draft-07, what editors' YAML plugins understand). The loader validates
 * with it (ajv) and cli/compose/clove.schema.json is this object written out (compose.test.ts keeps them
 * identical). `errorMessage` is the sentence the loader (and editors that know the keyword) show when a
 * value fails; `description`s are what editors show on hover and completion.
 */
import { SCHEMA_DEFS } from '../../protocol/index.js';
import { ENTRY_PATTERN } from './entry.js';
import { DURATION_PATTERN, SIZE_PATTERN } from './units.js';

export const SERVICE_NAME_PATTERN = '^[a-z0-9][a-z0-9_-]{0,40}$';
export const PROJECT_NAME_PATTERN = '^[a-z0-9][a-z0-9_-]{0,62}$';
export const PERMISSION_LEVELS = ['unrestricted', 'standard', 'sandboxed', 'readonly', 'minimal'];
/** Quota names and the unit of their limit: a size, a duration (plain numbers: ms) or a count. */
export const QUOTA_UNITS = {
  memory: 'size',
  cpu_time: 'duration',
  wall_time: 'duration',
  llm_calls: 'count',
  llm_tokens: 'count',
  network_bytes: 'size',
  exec_count: 'count',
  mcp_calls: 'count',
} as const;
export type QuotaName = keyof typeof QUOTA_UNITS;
/** Quotas on a resource the kernel cannot refuse bit by bit (memory, time) cannot `deny`. */
export const NO_DENY_QUOTAS: readonly string[] = ['memory', 'cpu_time', 'wall_time'];

/** Label keys as the contract allows them (`Labels` in protocol/families/lifecycle.json). */
export const LABEL_KEY_PATTERN: string = SCHEMA_DEFS.$defs.Labels.propertyNames.pattern;
const LABEL_ITEM_PATTERN = `${LABEL_KEY_PATTERN.slice(0, -1)}=`;
/** The contract's most labels on one agent; `clove up` uses 4 of them. */
export const MAX_LABELS: number = SCHEMA_DEFS.$defs.Labels.maxProperties;
const LABEL_KEY_RULE = 'keys are 1–63 letters, digits, ., -, _, /, starting with a letter or digit';

const budgetNames = Object.keys(SCHEMA_DEFS.$defs.Budgets.properties);

const size = (description: string) => ({ $ref: '#/definitions/size', description });
const seconds = (description: string) => ({ $ref: '#/definitions/duration_s', description });
const millis = (description: string) => ({ $ref: '#/definitions/duration_ms', description });
const EXT = { '^x-': { description: 'extension field (for YAML anchors); ignored' } };

function quotaSchema(name: QuotaName): object {
  const unit = QUOTA_UNITS[name];
  const limit =
    unit === 'size'
      ? { $ref: '#/definitions/size' }
      : unit === 'duration'
        ? { $ref: '#/definitions/duration_ms' }
        : { type: 'integer', minimum: 0 };
  const policies = NO_DENY_QUOTAS.includes(name) ? ['pause', 'kill'] : ['deny', 'pause', 'kill'];
  const what =
    unit === 'size'
      ? 'a size like 256M'
      : unit === 'duration'
        ? 'a duration like 1h (plain numbers: ms)'
        : 'a non-negative integer';
  return {
    anyOf: [
      limit,
      {
        type: 'object',
        additionalProperties: false,
        required: ['limit'],
        properties: {
          limit,
          policy: {
            enum: policies,
            description: `what happens at the limit (default ${NO_DENY_QUOTAS.includes(name) ? 'kill' : 'deny'})`,
          },
        },
      },
    ],
    errorMessage: `must be ${what}, or { limit: …, policy: ${policies.join(' | ')} }`,
  };
}

const quotas = (description: string) => ({
  type: 'object',
  description,
  additionalProperties: false,
  properties: Object.fromEntries(
    (Object.keys(QUOTA_UNITS) as QuotaName[]).map((q) => [
      q,
      { ...quotaSchema(q), description: quotaHelp[q] },
    ]),
  ),
});

const quotaHelp: Record<QuotaName, string> = {
  memory: 'memory in use (a size)',
  cpu_time: 'CPU time used (a duration; plain numbers: ms)',
  wall_time: "time since the agent's first start (a duration; plain numbers: ms)",
  llm_calls: 'LLM calls made',
  llm_tokens: 'LLM tokens used',
  network_bytes: 'HTTP bytes sent and received (a size)',
  exec_count: 'commands run with EXEC',
  mcp_calls: "calls of the operator's MCP tools (MCP_CALL)",
};

const service = {
  type: 'object',
  description: 'One service: one agent, or `replicas` agents named `<service>-1`, `<service>-2`, …',
  additionalProperties: false,
  patternProperties: EXT,
  oneOf: [{ required: ['script'] }, { required: ['command'] }, { required: ['entry'] }],
  errorMessage: 'needs exactly one of `script`, `command` or `entry`',
  properties: {
    script: {
      type: 'string',
      minLength: 1,
      description: 'the agent program, relative to this file; `.py` runs with python3, `.js` with node',
    },
    command: {
      type: ['array', 'string'],
      minLength: 1,
      minItems: 1,
      items: { type: 'string' },
      description:
        'explicit argv instead of `script`: a list like ["python3", "agent.py"], or a string split as a shell splits words (quotes, escapes; no pipes, redirections or globs: use ["sh", "-c", "…"] for those)',
      errorMessage: 'must be a list of strings like ["python3", "agent.py"] or a command line',
    },
    entry: {
      type: 'string',
      pattern: ENTRY_PATTERN,
      description:
        "a framework object served as the agent, `module:attr` (a LangGraph graph, a LangChain runnable, a CrewAI crew, an AutoGen agent or team, a callable): runs `python -m clove_sdk.integrations.run module:attr` with `python`, the module found in this file's directory",
      errorMessage: 'must be module:attr with Python names, e.g. my_graph:graph',
    },
    python: {
      type: 'string',
      description: "interpreter for a `.py` script or an `entry` (e.g. a virtualenv's bin/python)",
    },
    args: { type: 'array', items: { type: 'string' }, description: 'argv after the script' },
    cwd: {
      type: 'string',
      description: "working directory, relative to this file (default: the agent's own)",
    },
    env: {
      description: 'environment added to the minimal one: a map NAME: value, or a list of "NAME=value"',
      anyOf: [
        {
          type: 'object',
          propertyNames: { pattern: '^[^=]+$', errorMessage: 'must not contain =' },
          additionalProperties: { type: ['string', 'number', 'boolean', 'null'] },
        },
        { type: 'array', items: { type: 'string', pattern: '^[^=]+(=.*)?$' } },
      ],
      errorMessage: 'must be a map NAME: value, or a list of "NAME=value" strings',
    },
    env_file: {
      description: 'dotenv file(s) relative to this file, merged under `env` (later files win; `env` wins)',
      anyOf: [
        { type: 'string', minLength: 1 },
        { type: 'array', items: { $ref: '#/definitions/env_file_entry' } },
        { $ref: '#/definitions/env_file_entry' },
      ],
      errorMessage: 'must be a path, a list of paths, or { path: …, required: false }',
    },
    replicas: {
      type: 'integer',
      minimum: 0,
      maximum: 1000,
      description:
        'run this many agents `<service>-1` … `<service>-N` (without it: one agent named `<service>`)',
    },
    restart_policy: {
      description: 'never | on-failure | always, or the compose object form',
      anyOf: [
        { enum: ['never', 'on-failure', 'on_failure', 'always', 'no', 'unless-stopped'] },
        {
          type: 'object',
          additionalProperties: false,
          properties: {
            condition: {
              enum: ['none', 'never', 'no', 'on-failure', 'on_failure', 'any', 'always'],
              description: 'none/never, on-failure, any/always',
            },
            max_attempts: { type: 'integer', minimum: 0, description: 'restarts allowed within `window`' },
            delay: seconds('delay before the 2nd consecutive restart (backoff_initial_ms)'),
            max_delay: seconds('the longest backoff delay (backoff_max_ms)'),
            multiplier: { type: 'number', minimum: 1, description: 'backoff multiplier' },
            window: seconds('the window `max_attempts` counts in (restart_window)'),
          },
        },
      ],
      errorMessage:
        'must be never | on-failure | always, or { condition, max_attempts, delay, window, max_delay, multiplier }',
    },
    max_restarts: { type: 'integer', minimum: 0, description: 'restarts allowed within `restart_window`' },
    restart_window: seconds('the window `max_restarts` counts in'),
    backoff_initial_ms: millis('delay before the 2nd consecutive restart'),
    backoff_multiplier: { type: 'number', minimum: 1, description: 'backoff multiplier' },
    backoff_max_ms: millis('the longest backoff delay'),
    min_uptime_ms: millis('an agent up this long restarts immediately and its failure count is reset'),
    watchdog: seconds('kill and restart an agent silent this long (no syscall); 0 = off'),
    watchdog_ms: millis('same as `watchdog`'),
    limits: {
      type: 'object',
      description: 'cgroup limits of each agent',
      additionalProperties: false,
      properties: {
        memory: size('memory limit, e.g. 512M'),
        cpu: { type: 'number', exclusiveMinimum: 0, maximum: 1024, description: 'CPU cores, e.g. 0.5' },
        pids: { type: 'integer', minimum: 1, description: 'most processes at once' },
        cpu_shares: { type: 'integer', minimum: 2, maximum: 262144, description: 'relative CPU weight' },
      },
    },
    permissions: {
      description: `a preset (${PERMISSION_LEVELS.join(', ')}) or a permissions object (docs/protocol.md)`,
      anyOf: [{ enum: PERMISSION_LEVELS }, { type: 'object' }],
      errorMessage: `must be one of ${PERMISSION_LEVELS.join(', ')}, or a permissions object`,
    },
    network: { type: 'boolean', description: "true: the host's network" },
    world: {
      type: 'string',
      minLength: 1,
      description:
        'the id of a world (docs/worlds.md) every agent of the service is in from its first syscall; it must exist (`clove world create`)',
    },
    sandboxed: { type: 'boolean', description: "false: a plain process with the kernel's uid" },
    durable: {
      type: 'boolean',
      description:
        "true: each agent's THINK, HTTP and EXEC results are journaled and replayed after a crash or restart (docs/durable.md)",
    },
    standby: {
      type: 'integer',
      enum: [0, 1],
      description:
        '1: each agent (a Python script) keeps a warm standby, a parked process with the interpreter and SDK loaded that is promoted when the agent crashes (docs/supervision.md "Warm standby"); one more process per agent',
    },
    spare: {
      type: 'boolean',
      description:
        'false: no spare sandbox made in advance for the restarts of each agent (SPAWN `spare`, docs/supervision.md "Spare sandbox"); default true',
    },
    labels: {
      description:
        'labels of each agent besides the `clove.*` ones `clove up` sets: a map key: value, or a list of "key=value"',
      anyOf: [
        {
          type: 'object',
          propertyNames: { pattern: LABEL_KEY_PATTERN, errorMessage: LABEL_KEY_RULE },
          additionalProperties: { type: ['string', 'number', 'boolean'], maxLength: 256 },
        },
        { type: 'array', items: { type: 'string', pattern: LABEL_ITEM_PATTERN } },
      ],
      errorMessage: `must be a map key: value, or a list of "key=value" strings (${LABEL_KEY_RULE})`,
    },
    quotas: quotas('quotas of each agent (per replica)'),
    service_quotas: quotas('quotas of the whole service: the sum over its replicas'),
    budgets: {
      type: 'object',
      description: "per-agent budgets (docs/protocol.md); left out: the kernel's defaults",
      additionalProperties: false,
      properties: Object.fromEntries(
        budgetNames.map((b) => [
          b,
          b.endsWith('_bytes') ? { $ref: '#/definitions/size' } : { type: 'integer', minimum: 0 },
        ]),
      ),
    },
    depends_on: {
      description:
        'services started first: a list of names, or a map name → { condition: started | healthy }',
      anyOf: [
        { type: 'array', items: { type: 'string' }, uniqueItems: true },
        {
          type: 'object',
          additionalProperties: {
            anyOf: [
              { type: 'null' },
              {
                type: 'object',
                additionalProperties: false,
                properties: {
                  condition: {
                    enum: ['started', 'service_started', 'healthy', 'service_healthy'],
                    description:
                      'started: running; healthy: every replica said HELLO, or its healthcheck passed',
                  },
                },
              },
            ],
            errorMessage: 'must be { condition: started | healthy } (or empty)',
          },
        },
      ],
      errorMessage: 'must be a list of service names, or a map name → { condition: started | healthy }',
    },
    healthcheck: {
      type: 'object',
      description: 'a command that says whether the service is healthy',
      additionalProperties: false,
      required: ['test'],
      properties: {
        test: {
          description: '["CMD", argv…], ["CMD-SHELL", "shell line"], a shell line, or ["NONE"] (no check)',
          anyOf: [
            { type: 'string', minLength: 1 },
            { type: 'array', minItems: 1, items: { type: 'string' } },
          ],
          errorMessage: 'must be ["CMD", …], ["CMD-SHELL", "…"] or a shell command string',
        },
        interval: seconds('time between checks (default 5s)'),
        timeout: seconds('a check running longer fails (default 10s)'),
        retries: {
          type: 'integer',
          minimum: 1,
          description: 'consecutive failures before unhealthy (default 3)',
        },
        disable: { type: 'boolean', description: 'true: no healthcheck' },
      },
    },
    placement: {
      type: 'object',
      description:
        'which nodes of a cluster run the replicas (docs/compose.md "Placement"); a kernel without --cluster ignores it with a warning',
      additionalProperties: false,
      properties: {
        nodes: {
          type: 'array',
          minItems: 1,
          uniqueItems: true,
          items: { type: 'string', minLength: 1 },
          description: 'only these nodes (default: every live node)',
        },
        spread: {
          type: 'boolean',
          description:
            'true (default): each replica to the node with the fewest replicas of this service, then the most free memory, then the most idle CPU; false: the roomiest node until max_per_node',
        },
        max_per_node: {
          type: 'integer',
          minimum: 1,
          description: 'at most this many replicas of this service on one node',
        },
      },
    },
  },
};

export const COMPOSE_SCHEMA: object = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'clove.yaml',
  description: 'A Clove project: the agents `clove up` starts (docs/compose.md)',
  type: 'object',
  additionalProperties: false,
  required: ['agents'],
  patternProperties: EXT,
  properties: {
    version: {
      description: 'format version: "1"',
      enum: ['1', '1.0', 1],
      errorMessage: 'must be "1"',
    },
    name: {
      type: 'string',
      pattern: PROJECT_NAME_PATTERN,
      description: "project name (default: the directory's name); labels every agent `clove.project`",
      errorMessage: 'must be lower-case letters, digits, - and _ (starting with a letter or digit)',
    },
    agents: {
      type: 'object',
      description: 'the services: name → service',
      minProperties: 1,
      propertyNames: {
        pattern: SERVICE_NAME_PATTERN,
        errorMessage:
          'must be lower-case letters, digits, - and _, starting with a letter or digit, at most 41 characters',
      },
      additionalProperties: { $ref: '#/definitions/service' },
    },
  },
  definitions: {
    service,
    size: {
      anyOf: [
        { type: 'integer', minimum: 0 },
        { type: 'string', pattern: SIZE_PATTERN },
      ],
      errorMessage: 'must be a size like 512M, 1G, 64k or a number of bytes',
    },
    duration_s: {
      anyOf: [
        { type: 'number', minimum: 0 },
        { type: 'string', pattern: DURATION_PATTERN },
      ],
      errorMessage: 'must be a duration like 30s, 5m, 1h30m, 250ms or a number of seconds',
    },
    duration_ms: {
      anyOf: [
        { type: 'number', minimum: 0 },
        { type: 'string', pattern: DURATION_PATTERN },
      ],
      errorMessage: 'must be a duration like 30s, 5m, 250ms or a number of milliseconds',
    },
    env_file_entry: {
      anyOf: [
        { type: 'string', minLength: 1 },
        {
          type: 'object',
          additionalProperties: false,
          required: ['path'],
          properties: {
            path: { type: 'string', minLength: 1 },
            required: { type: 'boolean', description: 'false: a missing file is skipped' },
          },
        },
      ],
      errorMessage: 'must be a path or { path: …, required: false }',
    },
  },
};
