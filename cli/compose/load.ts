/**
 * clove.yaml → a normalized Project: find the file, parse it with `yaml` (keeping every node's position),
 * interpolate `${VAR}`, validate it against COMPOSE_SCHEMA with ajv, then turn each service into the SPAWN
 * request of one replica. Every error is a ComposeError naming file:line:column and the field.
 * A pure module: no kernel, no socket; the CLI's `up`/`down`/`scale`/`config` build on it.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import dotenv from 'dotenv';
import { parse as shellParse } from 'shell-quote';
import {
  LineCounter,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  parse as parseYaml,
  parseDocument,
  visit,
  type Document,
  type Node as YamlNode,
  type Scalar,
} from 'yaml';
import { Ajv2020 } from 'ajv/dist/2020.js';
import {
  REQUEST_SCHEMAS,
  SCHEMA_DEFS,
  type QuotaLimit,
  type QuotaPolicy,
  type SpawnRequest,
} from '../../protocol/index.js';
import { defaultPython, entrySpawn } from './entry.js';
import { COMPOSE_SCHEMA, MAX_LABELS, NO_DENY_QUOTAS, QUOTA_UNITS, type QuotaName } from './schema.js';
import { parseDuration, parseSize } from './units.js';

export const COMPOSE_FILES = ['clove.yaml', 'clove.yml'];

export type { QuotaPolicy };
/** One quota as SPAWN and SET_QUOTA take it (the contract's QuotaLimit). */
export type QuotaSpec = QuotaLimit;
export type Quotas = Record<string, QuotaSpec>;

/** What SPAWN takes for one replica, minus `name` and `labels` (the CLI adds them). */
export type SpawnArgsBase = Omit<SpawnRequest, 'name' | 'labels'>;

/** Where a service's replicas run on a clustered kernel (`placement:`; docs/compose.md "Placement"). */
export interface Placement {
  /** Only these nodes; null: every live node. */
  nodes: string[] | null;
  /** true: fewest replicas of the service first; false: the roomiest node until `maxPerNode`. */
  spread: boolean;
  /** At most this many replicas of the service on one node; null: no bound. */
  maxPerNode: number | null;
}

export interface Healthcheck {
  command: string[];
  interval_ms: number;
  timeout_ms: number;
  retries: number;
}

export interface Service {
  name: string;
  /** `replicas:` was given: agents are `<service>-1` … */
  replicated: boolean;
  replicas: number;
  spawn: SpawnArgsBase;
  serviceQuotas: Quotas | null;
  /** The service's own `labels:` (never `clove.*`); composeLabels adds the `clove.*` ones. */
  labels: Record<string, string>;
  dependsOn: { service: string; condition: 'started' | 'healthy' }[];
  healthcheck: Healthcheck | null;
  /** `placement:` as given; null: spread over every live node (a clustered kernel only). */
  placement: Placement | null;
  /** sha256 (12 hex) of what defines a replica: spawn, labels, healthcheck (not replicas, serviceQuotas). */
  hash: string;
}

export interface Project {
  name: string;
  file: string;
  dir: string;
  /** In start order: dependencies first, ties in file order. */
  services: Service[];
  /** Things worth telling the user that are not errors (an unset `${VAR}` became ""). */
  warnings: string[];
}

type PathSeg = string | number;

/** The one error of loading a compose file: `file:line:column: field: what is wrong`. */
export class ComposeError extends Error {
  readonly file: string;
  readonly line?: number;
  readonly column?: number;
  readonly field?: string;
  /** The sentence without the location prefix. */
  readonly detail: string;
  constructor(file: string, detail: string, where: { line?: number; column?: number; field?: string } = {}) {
    const loc = [displayPath(file), where.line, where.line !== undefined ? where.column : undefined]
      .filter((x) => x !== undefined)
      .join(':');
    super(`${loc}: ${where.field ? `${where.field}: ` : ''}${detail}`);
    this.name = 'ComposeError';
    this.file = file;
    this.line = where.line;
    this.column = where.column;
    this.field = where.field;
    this.detail = detail;
  }
}

/** The path as the user most likely typed it: relative to the working directory when under it. */
function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

/** `agents.workers.args[0]` from a path. */
export function fieldName(p: readonly PathSeg[]): string {
  let out = '';
  for (const seg of p) out += typeof seg === 'number' ? `[${seg}]` : out ? `.${seg}` : seg;
  return out;
}

/** The compose file in `cwd` (not its parents), the first of COMPOSE_FILES that exists, or null. */
export function findComposeFile(cwd: string): string | null {
  for (const f of COMPOSE_FILES) {
    const p = path.resolve(cwd, f);
    if (fs.statSync(p, { throwIfNoEntry: false })?.isFile()) return p;
  }
  return null;
}

/** Agent names of a service: `<service>-1` … `<service>-N` when replicated, else the service's own name. */
export function replicaNames(s: Service, count: number = s.replicas): string[] {
  if (!s.replicated) return count > 0 ? [s.name] : [];
  return Array.from({ length: count }, (_, i) => `${s.name}-${i + 1}`);
}

/** The labels `up` puts on an agent of service `s` (replica: 1-based, only for replicated services). */
export function composeLabels(p: Project, s: Service, replica?: number): Record<string, string> {
  const labels: Record<string, string> = {
    ...s.labels,
    'clove.project': p.name,
    'clove.service': s.name,
    'clove.config-hash': s.hash,
  };
  if (s.replicated && replica !== undefined) labels['clove.replica'] = String(replica);
  return labels;
}

// ── Source positions ──────────────────────────────────────────────────────────────────────────────────

/** The parsed document and a way back from a path in the plain value to a line and column. */
class Source {
  constructor(
    readonly file: string,
    readonly doc: Document,
    readonly lines: LineCounter,
  ) {}

  /**
   * Position of the node at `p` (or of its key, when `key`), or of its nearest ancestor that exists in the
   * document (a key that came through a `<<` merge has no node of its own).
   */
  where(p: readonly PathSeg[], key = false): { line?: number; column?: number } {
    let node: unknown = this.doc.contents;
    let found: YamlNode | null = (this.doc.contents as YamlNode | null) ?? null;
    for (let i = 0; i < p.length; i++) {
      if (isAlias(node)) node = node.resolve(this.doc);
      const last = i === p.length - 1;
      if (isMap(node)) {
        const pair = node.items.find(
          (it) => (isScalar(it.key) ? String(it.key.value) : it.key) === String(p[i]),
        );
        if (!pair) break;
        node = pair.value;
        // `a:` with nothing after it: the empty value sits after the colon; point at the key instead.
        const empty =
          !pair.value || (isScalar(pair.value) && pair.value.value === null && !pair.value.source);
        found = ((key && last) || empty ? pair.key : pair.value) as YamlNode;
      } else if (isSeq(node)) {
        node = node.items[Number(p[i])];
        if (!node) break;
        found = node as YamlNode;
      } else break;
    }
    const offset = found?.range?.[0];
    if (offset === undefined) return {};
    const pos = this.lines.linePos(offset);
    return { line: pos.line, column: pos.col };
  }

  error(p: readonly PathSeg[], detail: string, key = false): ComposeError {
    return new ComposeError(this.file, detail, { ...this.where(p, key), field: fieldName(p) || undefined });
  }
}

// ── Validation: ajv errors → one sentence at one place ────────────────────────────────────────────────

let validator: { ajv: Ajv; root: ValidateFunction; pointers: Map<object, string> } | undefined;

/** One ajv instance for the schema, and where each subschema object sits in it (to re-validate a branch). */
function getValidator(): NonNullable<typeof validator> {
  if (validator) return validator;
  const ajv = new Ajv({ allErrors: false, verbose: true, strictTypes: false, allowUnionTypes: true });
  ajv.addKeyword('errorMessage');
  ajv.addSchema(COMPOSE_SCHEMA, 'compose');
  const pointers = new Map<object, string>();
  const walk = (v: unknown, ptr: string): void => {
    if (!v || typeof v !== 'object') return;
    if (!Array.isArray(v)) pointers.set(v, ptr);
    for (const [k, child] of Object.entries(v))
      walk(child, `${ptr}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`);
  };
  walk(COMPOSE_SCHEMA, '');
  validator = { ajv, root: ajv.getSchema('compose')!, pointers };
  return validator;
}

type Schema = Record<string, unknown>;

function pointerToPath(ptr: string): PathSeg[] {
  if (!ptr) return [];
  return ptr
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v;
}

function resolveRef(s: Schema): Schema {
  const ref = s.$ref as string | undefined;
  if (!ref) return s;
  let cur: unknown = COMPOSE_SCHEMA;
  for (const seg of pointerToPath(ref.slice(1))) cur = (cur as Schema)[seg as string];
  return resolveRef(cur as Schema);
}

/** Whether a union branch is meant for values of the data's JSON type (so its own error is the useful one). */
function branchTakes(branch: Schema, t: string): boolean {
  const s = resolveRef(branch);
  if (Array.isArray(s.anyOf)) return (s.anyOf as Schema[]).some((b) => branchTakes(b, t));
  if (s.type !== undefined) {
    const types = ([] as string[]).concat(s.type as string);
    return (
      types.includes(t) ||
      (t === 'integer' && types.includes('number')) ||
      (t === 'number' && types.includes('integer'))
    );
  }
  if (Array.isArray(s.enum)) return (s.enum as unknown[]).some((e) => jsonType(e) === t);
  return true;
}

const TYPE_WORDS: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'true or false',
  null: 'empty',
};

function got(v: unknown): string {
  return v !== null && typeof v === 'object' ? '' : ` (got ${JSON.stringify(v)})`;
}

/** Edit distance, for "did you mean". */
function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}

function didYouMean(word: string, options: readonly string[]): string {
  let best: string | undefined;
  let bestD = Math.min(2, Math.floor(word.length / 2)) + 1;
  for (const o of options) {
    const d = levenshtein(word.toLowerCase(), o.toLowerCase());
    if (d < bestD) [best, bestD] = [o, d];
  }
  return best ? ` (did you mean "${best}"?)` : '';
}

interface Problem {
  path: PathSeg[];
  message: string;
  key?: boolean;
}

/** The sentence for ajv's failing keyword `e` (the last error: ajv stops at the first failure). */
function explain(e: ErrorObject, base: PathSeg[], inherited?: string): Problem {
  const v = getValidator();
  const p = [...base, ...pointerToPath(e.instancePath).map((s) => (/^\d+$/.test(String(s)) ? Number(s) : s))];
  const parent = (e.parentSchema ?? {}) as Schema;
  // A union's sentence still fits an error of its chosen branch about the same value, not one deeper down.
  const own = (parent.errorMessage as string | undefined) ?? (e.instancePath === '' ? inherited : undefined);
  const params = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'anyOf':
    case 'oneOf': {
      if (e.keyword === 'oneOf' && parent.properties && 'script' in (parent.properties as Schema)) {
        if (jsonType(e.data) !== 'object') return { path: p, message: `must be a mapping${got(e.data)}` };
        const d = e.data as Schema;
        // ajv tries oneOf before additionalProperties; a misspelt `script` is better reported as such.
        const known = Object.keys(parent.properties as Schema);
        const unknown = Object.keys(d).find((k) => !known.includes(k) && !k.startsWith('x-'));
        if (unknown !== undefined) {
          return {
            path: [...p, unknown],
            key: true,
            message: `unknown key "${unknown}"${didYouMean(unknown, known)}`,
          };
        }
        const given = ['script', 'command', 'entry'].filter((k) => d[k] !== undefined);
        return {
          path: p,
          message:
            given.length > 1
              ? `has both ${given.map((k) => `\`${k}\``).join(' and ')}: give exactly one`
              : 'needs `script` (a program file), `command` (an argv list) or `entry` (module:attr)',
        };
      }
      const branches = parent[e.keyword] as Schema[];
      const t = jsonType(e.data);
      const fit = branches.map((b, i) => i).filter((i) => branchTakes(branches[i], t));
      const ptr = v.pointers.get(parent);
      if (fit.length === 1 && ptr !== undefined) {
        const sub = v.ajv.getSchema(`compose#${ptr}/${e.keyword}/${fit[0]}`);
        if (sub && !sub(e.data) && sub.errors?.length) {
          return explain(sub.errors[sub.errors.length - 1], p, own);
        }
      }
      return { path: p, message: `${own ?? 'is not valid'}${got(e.data)}` };
    }
    case 'additionalProperties': {
      const k = String(params.additionalProperty);
      const known = Object.keys((parent.properties as Schema | undefined) ?? {});
      return { path: [...p, k], key: true, message: `unknown key "${k}"${didYouMean(k, known)}` };
    }
    case 'required': {
      // `agentz:` next to a missing `agents:` is a typo, not two problems.
      const missing = String(params.missingProperty);
      const known = Object.keys((parent.properties as Schema | undefined) ?? {});
      const data = (e.data ?? {}) as Schema;
      const typo = Object.keys(data).find((k) => !known.includes(k) && didYouMean(k, [missing]));
      if (typo !== undefined) {
        return { path: [...p, typo], key: true, message: `unknown key "${typo}"${didYouMean(typo, known)}` };
      }
      return { path: p, message: `missing required key "${missing}"` };
    }
    case 'propertyNames':
    case 'pattern': {
      if (e.keyword === 'propertyNames' || params.propertyName !== undefined) {
        const k = String(params.propertyName);
        const names = (parent.propertyNames ?? parent) as Schema;
        const rule = (names.errorMessage as string | undefined) ?? `must match ${String(names.pattern)}`;
        const what = p[p.length - 1] === 'agents' ? 'service name' : 'key';
        return { path: [...p, k], key: true, message: `${what} "${k}" ${rule}` };
      }
      return { path: p, message: `${own ?? `must match ${String(params.pattern)}`}${got(e.data)}` };
    }
    case 'type':
      if (own) return { path: p, message: `${own}${got(e.data)}` };
      return {
        path: p,
        message: `must be ${([] as string[])
          .concat(params.type as string)
          .map((x) => TYPE_WORDS[x] ?? x)
          .join(' or ')}${got(e.data)}`,
      };
    case 'enum': {
      if (parent.errorMessage) return { path: p, message: `${String(parent.errorMessage)}${got(e.data)}` };
      const vals = (params.allowedValues as unknown[]).map(String);
      const hint = typeof e.data === 'string' ? didYouMean(e.data, vals) : '';
      return { path: p, message: `must be one of ${vals.join(', ')}${got(e.data)}${hint}` };
    }
    case 'minProperties':
      return {
        path: p,
        message: p[p.length - 1] === 'agents' ? 'needs at least one service' : 'must not be empty',
      };
    case 'minItems':
      return { path: p, message: 'must not be empty' };
    case 'uniqueItems':
      return { path: p, message: 'lists the same item twice' };
    default:
      return {
        path: p,
        message: `${own && e.keyword !== 'minimum' && e.keyword !== 'maximum' ? own : (e.message ?? 'is not valid')}${got(e.data)}`,
      };
  }
}

// ── Interpolation ─────────────────────────────────────────────────────────────────────────────────────

const INTERP = /\$\$|\$\{([^}]*)\}|\$\{/g;
const VAR_EXPR = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([\s\S]*))?$/;

/**
 * Compose's interpolation of one string: `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}`
 * (unset), `${VAR:?message}`/`${VAR?message}` (an error), `$$` → `$`. Throws a string (the message).
 */
function interpolate(s: string, env: NodeJS.ProcessEnv, warnings: Set<string>): string {
  return s.replace(INTERP, (m, expr: string | undefined) => {
    if (m === '$$') return '$';
    if (expr === undefined) throw `unclosed "\${" in ${JSON.stringify(s)} (write $$ for a literal $)`;
    const x = VAR_EXPR.exec(expr);
    if (!x) throw `bad interpolation "\${${expr}}": use \${VAR}, \${VAR:-default} or \${VAR:?message}`;
    const [, name, op, arg] = x;
    const val = env[name];
    const missing = op?.startsWith(':') ? !val : val === undefined;
    if (op === ':-' || op === '-') return missing ? arg : val!;
    if (op === ':?' || op === '?') {
      if (missing) throw `${name} is ${val === undefined ? 'not set' : 'empty'}${arg ? `: ${arg}` : ''}`;
      return val!;
    }
    if (val === undefined) warnings.add(`${name} is not set: \${${name}} became an empty string`);
    return val ?? '';
  });
}

// ── Loading ───────────────────────────────────────────────────────────────────────────────────────────

/** What loading may take from outside the file. */
export interface LoadOptions {
  /** Environment for `${VAR}` and bare `env` names (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** The interpreter of an `entry` without `python` (default: the real python3, cli/compose/entry.ts). */
  python?: () => string;
}

/** Read, parse, validate and normalize a compose file. Throws ComposeError. */
export function loadCompose(file: string, opts: LoadOptions = {}): Project {
  const abs = path.resolve(file);
  const env = { ...projectDotEnv(path.dirname(abs)), ...(opts.env ?? process.env) };
  let text: string;
  try {
    text = fs.readFileSync(abs, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ComposeError(
      abs,
      `cannot read the file: ${code === 'ENOENT' ? 'it does not exist' : (code ?? String(err))}`,
    );
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, merge: true, prettyErrors: false, uniqueKeys: true });
  const src = new Source(abs, doc, lines);
  if (doc.errors.length) {
    const e = doc.errors[0];
    const pos = lines.linePos(e.pos[0]);
    throw new ComposeError(abs, `YAML syntax: ${e.message.split('\n')[0]}`, {
      line: pos.line,
      column: pos.col,
    });
  }
  const warnings = new Set<string>();
  visit(doc, {
    Scalar(key, node: Scalar, ancestors) {
      if (key === 'key' || typeof node.value !== 'string' || !node.value.includes('$')) return;
      let out: string;
      try {
        out = interpolate(node.value, env, warnings);
      } catch (msg) {
        const pos = node.range ? lines.linePos(node.range[0]) : undefined;
        const field = fieldName(pathOf([...ancestors, node]));
        throw new ComposeError(abs, String(msg), { ...(pos && { line: pos.line, column: pos.col }), field });
      }
      // A plain scalar takes its type after interpolation (`replicas: ${N:-3}` is a number), as in compose.
      if (node.type === 'PLAIN' && out !== node.value) {
        const typed: unknown = safeScalar(out);
        node.value = typed;
      } else node.value = out;
    },
  });
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    throw new ComposeError(abs, `YAML: ${(err as Error).message}`);
  }
  if (data === null || data === undefined)
    throw new ComposeError(abs, 'the file is empty: it needs `agents:`');
  const v = getValidator();
  if (!v.root(data)) {
    const pr = explain(v.root.errors![v.root.errors!.length - 1], []);
    throw src.error(pr.path, pr.message, pr.key);
  }
  return normalize(src, data as RawProject, env, [...warnings], opts.python ?? defaultPython);
}

/** The plain-value path of a node from the visitor's ancestors (pairs give keys, sequences indices). */
function pathOf(chain: readonly unknown[]): PathSeg[] {
  const out: PathSeg[] = [];
  chain.forEach((n, i) => {
    if (isPair(n)) out.push(isScalar(n.key) ? String(n.key.value) : String(n.key));
    else if (isSeq(n)) out.push(n.items.indexOf(chain[i + 1] as never));
  });
  return out;
}

function safeScalar(s: string): unknown {
  try {
    const v: unknown = parseYaml(s);
    return v === null || typeof v === 'object' ? s : v;
  } catch {
    return s;
  }
}

// ── Normalization ─────────────────────────────────────────────────────────────────────────────────────

type Size = string | number;
type QuotaRaw = Size | { limit: Size; policy?: QuotaPolicy };
interface RawService {
  script?: string;
  entry?: string;
  command?: string[] | string;
  python?: string;
  args?: string[];
  cwd?: string;
  env?: Record<string, string | number | boolean | null> | string[];
  env_file?:
    string | { path: string; required?: boolean } | (string | { path: string; required?: boolean })[];
  replicas?: number;
  restart_policy?:
    | string
    | {
        condition?: string;
        max_attempts?: number;
        delay?: Size;
        max_delay?: Size;
        multiplier?: number;
        window?: Size;
      };
  max_restarts?: number;
  restart_window?: Size;
  backoff_initial_ms?: Size;
  backoff_multiplier?: number;
  backoff_max_ms?: Size;
  min_uptime_ms?: Size;
  watchdog?: Size;
  watchdog_ms?: Size;
  limits?: { memory?: Size; cpu?: number; pids?: number; cpu_shares?: number };
  permissions?: string | Record<string, unknown>;
  network?: boolean;
  world?: string;
  sandboxed?: boolean;
  durable?: boolean;
  standby?: number;
  spare?: boolean;
  labels?: Record<string, string | number | boolean> | string[];
  quotas?: Record<string, QuotaRaw>;
  service_quotas?: Record<string, QuotaRaw>;
  budgets?: Record<string, Size>;
  depends_on?: string[] | Record<string, { condition?: string } | null>;
  healthcheck?: {
    test: string | string[];
    interval?: Size;
    timeout?: Size;
    retries?: number;
    disable?: boolean;
  };
  placement?: { nodes?: string[]; spread?: boolean; max_per_node?: number };
}
interface RawProject {
  version?: string | number;
  name?: string;
  agents: Record<string, RawService>;
}

const CPU_PERIOD = 100_000;
const RESTART_POLICIES: Record<string, 'never' | 'on-failure' | 'always'> = {
  never: 'never',
  no: 'never',
  none: 'never',
  'on-failure': 'on-failure',
  on_failure: 'on-failure',
  always: 'always',
  any: 'always',
  'unless-stopped': 'always',
};

/** `my Project!` → `myproject`: what compose allows in a project name. */
function sanitizeName(s: string): string {
  return (
    s
      .toLowerCase()
      .replace(/[^a-z0-9_-]/g, '')
      .replace(/^[-_]+/, '')
      .slice(0, 63) || 'default'
  );
}

function normalize(
  src: Source,
  raw: RawProject,
  env: NodeJS.ProcessEnv,
  warnings: string[],
  python: () => string,
): Project {
  const dir = path.dirname(src.file);
  const names = Object.keys(raw.agents);
  const byName = new Map<string, Service>();
  for (const name of names) byName.set(name, service(src, dir, name, raw.agents[name], names, env, python));
  const order = startOrder(src, names, byName);
  return {
    name: raw.name ?? sanitizeName(path.basename(dir)),
    file: src.file,
    dir,
    services: order.map((n) => byName.get(n)!),
    warnings,
  };
}

function service(
  src: Source,
  dir: string,
  name: string,
  r: RawService,
  all: string[],
  hostEnv: NodeJS.ProcessEnv,
  resolvePython: () => string,
): Service {
  const at = (...p: PathSeg[]): PathSeg[] => ['agents', name, ...p];
  const fail = (p: PathSeg[], msg: string): never => {
    throw src.error(p, msg);
  };
  const num = <T>(p: PathSeg[], f: () => T): T => {
    try {
      return f();
    } catch (err) {
      return fail(p, (err as Error).message);
    }
  };
  const spawn: SpawnArgsBase = {};
  if (r.script !== undefined) {
    spawn.script = path.resolve(dir, r.script);
    if (!fs.statSync(spawn.script, { throwIfNoEntry: false })?.isFile()) {
      fail(at('script'), `${spawn.script} is not a file`);
    }
  }
  if (typeof r.command === 'string') spawn.command = num(at('command'), () => words(r.command as string));
  else if (r.command !== undefined) spawn.command = [...r.command];
  // An interpreter given as a path is relative to this file, like `script`; a bare name is looked up on PATH.
  const python = r.python !== undefined && r.python.includes('/') ? path.resolve(dir, r.python) : r.python;
  if (python !== undefined && r.entry === undefined) spawn.python = python;
  if (r.args !== undefined) spawn.args = [...r.args];
  let env = environment(src, dir, name, r, hostEnv);
  if (r.entry !== undefined) {
    // The runner with the service's interpreter; the entry's module is found beside this file.
    const e = entrySpawn(r.entry, python ?? resolvePython(), dir, env);
    spawn.command = e.command;
    env = e.env;
  }
  if (Object.keys(env).length) spawn.env = env;
  if (r.cwd !== undefined) {
    spawn.cwd = path.resolve(dir, r.cwd);
    if (!fs.statSync(spawn.cwd, { throwIfNoEntry: false })?.isDirectory()) {
      fail(at('cwd'), `${spawn.cwd} is not a directory`);
    }
  }

  // Restarts: the flat fields, or compose's restart_policy object; the same setting twice is an error.
  const rp = r.restart_policy;
  const obj = rp !== undefined && typeof rp === 'object' ? rp : undefined;
  if (typeof rp === 'string') spawn.restart_policy = RESTART_POLICIES[rp];
  if (obj?.condition !== undefined) spawn.restart_policy = RESTART_POLICIES[obj.condition];
  else if (obj) spawn.restart_policy = 'always'; // compose's default condition is `any`
  const both = (flat: keyof RawService, sub: string): void => {
    if (obj && r[flat] !== undefined && (obj as Record<string, unknown>)[sub] !== undefined) {
      fail(at(flat), `set twice: also restart_policy.${sub}; keep one`);
    }
  };
  both('max_restarts', 'max_attempts');
  both('restart_window', 'window');
  both('backoff_initial_ms', 'delay');
  both('backoff_max_ms', 'max_delay');
  both('backoff_multiplier', 'multiplier');
  const maxRestarts = r.max_restarts ?? obj?.max_attempts;
  if (maxRestarts !== undefined) spawn.max_restarts = maxRestarts;
  if (r.restart_window !== undefined) {
    spawn.restart_window = num(at('restart_window'), () => parseDuration(r.restart_window!, 's')) / 1000;
  } else if (obj?.window !== undefined) {
    spawn.restart_window = num(at('restart_policy', 'window'), () => parseDuration(obj.window!, 's')) / 1000;
  }
  if (r.backoff_initial_ms !== undefined) {
    spawn.backoff_initial_ms = num(at('backoff_initial_ms'), () =>
      parseDuration(r.backoff_initial_ms!, 'ms'),
    );
  } else if (obj?.delay !== undefined) {
    spawn.backoff_initial_ms = num(at('restart_policy', 'delay'), () => parseDuration(obj.delay!, 's'));
  }
  const mult = r.backoff_multiplier ?? obj?.multiplier;
  if (mult !== undefined) spawn.backoff_multiplier = mult;
  if (r.backoff_max_ms !== undefined) {
    spawn.backoff_max_ms = num(at('backoff_max_ms'), () => parseDuration(r.backoff_max_ms!, 'ms'));
  } else if (obj?.max_delay !== undefined) {
    spawn.backoff_max_ms = num(at('restart_policy', 'max_delay'), () => parseDuration(obj.max_delay!, 's'));
  }
  if (r.min_uptime_ms !== undefined) {
    spawn.min_uptime_ms = num(at('min_uptime_ms'), () => parseDuration(r.min_uptime_ms!, 'ms'));
  }
  if (r.watchdog !== undefined && r.watchdog_ms !== undefined)
    fail(at('watchdog_ms'), 'set twice: also `watchdog`; keep one');
  if (r.watchdog !== undefined)
    spawn.watchdog_ms = num(at('watchdog'), () => parseDuration(r.watchdog!, 's'));
  if (r.watchdog_ms !== undefined)
    spawn.watchdog_ms = num(at('watchdog_ms'), () => parseDuration(r.watchdog_ms!, 'ms'));

  if (r.limits) {
    const l: NonNullable<SpawnArgsBase['limits']> = {};
    if (r.limits.memory !== undefined) {
      l.memory = num(at('limits', 'memory'), () => parseSize(r.limits!.memory!));
      if (l.memory < 4 * 1024 * 1024)
        fail(at('limits', 'memory'), `must be at least 4M (got ${l.memory} bytes)`);
    }
    if (r.limits.cpu !== undefined) {
      l.cpu_quota = Math.round(r.limits.cpu * CPU_PERIOD);
      l.cpu_period = CPU_PERIOD;
      if (l.cpu_quota < 1000) fail(at('limits', 'cpu'), `must be at least 0.01 cores (got ${r.limits.cpu})`);
    }
    if (r.limits.pids !== undefined) l.max_pids = r.limits.pids;
    if (r.limits.cpu_shares !== undefined) l.cpu_shares = r.limits.cpu_shares;
    spawn.limits = l;
  }
  if (r.permissions !== undefined) spawn.permissions = r.permissions;
  if (r.network !== undefined) spawn.network = r.network;
  if (r.world !== undefined) spawn.world = r.world;
  if (r.sandboxed !== undefined) spawn.sandboxed = r.sandboxed;
  if (r.durable !== undefined) spawn.durable = r.durable;
  if (r.standby !== undefined) spawn.standby = r.standby;
  if (r.spare !== undefined) spawn.spare = r.spare;
  if (r.quotas !== undefined) spawn.quotas = quotas(src, at('quotas'), r.quotas);
  if (r.budgets !== undefined) {
    const b: Record<string, number> = {};
    for (const [k, val] of Object.entries(r.budgets)) b[k] = num(at('budgets', k), () => parseSize(val));
    spawn.budgets = b;
  }

  const dependsOn: Service['dependsOn'] = [];
  if (Array.isArray(r.depends_on)) {
    r.depends_on.forEach((d, i) =>
      dependsOn.push({ service: dependency(src, at('depends_on', i), d, all), condition: 'started' }),
    );
  } else if (r.depends_on) {
    for (const [d, spec] of Object.entries(r.depends_on)) {
      const c = spec?.condition ?? 'started';
      dependsOn.push({
        service: dependency(src, at('depends_on', d), d, all, true),
        condition: c === 'healthy' || c === 'service_healthy' ? 'healthy' : 'started',
      });
    }
  }

  let healthcheck: Healthcheck | null = null;
  const hc = r.healthcheck;
  if (hc && !hc.disable) {
    const t = hc.test;
    let command: string[] | null;
    if (typeof t === 'string') command = ['sh', '-c', t];
    else if (t[0] === 'NONE') command = null;
    else if (t[0] === 'CMD') command = t.slice(1);
    else if (t[0] === 'CMD-SHELL') {
      if (t.length !== 2) fail(at('healthcheck', 'test'), '["CMD-SHELL", "…"] takes exactly one shell line');
      command = ['sh', '-c', t[1]];
    } else command = [...t];
    if (command && command.length === 0)
      fail(at('healthcheck', 'test'), '["CMD"] needs a program after "CMD"');
    if (command) {
      healthcheck = {
        command,
        interval_ms:
          hc.interval !== undefined
            ? num(at('healthcheck', 'interval'), () => parseDuration(hc.interval!, 's'))
            : 5000,
        timeout_ms:
          hc.timeout !== undefined
            ? num(at('healthcheck', 'timeout'), () => parseDuration(hc.timeout!, 's'))
            : 10_000,
        retries: hc.retries ?? 3,
      };
    }
  }

  const placement = r.placement ? placementOf(r, (p, msg) => fail(at('placement', ...p), msg)) : null;
  checkContract(src, at, r, spawn);
  const labels = userLabels(src, at('labels'), r.labels);
  const serviceQuotas =
    r.service_quotas !== undefined ? quotas(src, at('service_quotas'), r.service_quotas) : null;
  return {
    name,
    replicated: r.replicas !== undefined,
    replicas: r.replicas ?? 1,
    spawn,
    serviceQuotas,
    labels,
    dependsOn,
    healthcheck,
    placement,
    hash: configHash(spawn, labels, healthcheck),
  };
}

/**
 * A service's `placement:` (its shape is the schema's): a bound the listed nodes cannot hold all
 * `replicas` under is an error of the file, not of `up`.
 */
function placementOf(r: RawService, fail: (p: PathSeg[], msg: string) => never): Placement {
  const p = r.placement!;
  const out: Placement = {
    nodes: p.nodes ? [...p.nodes] : null,
    spread: p.spread ?? true,
    maxPerNode: p.max_per_node ?? null,
  };
  const replicas = r.replicas ?? 1;
  if (out.nodes && out.maxPerNode !== null && out.nodes.length * out.maxPerNode < replicas)
    fail(
      ['max_per_node'],
      `${replicas} replicas do not fit on ${out.nodes.length} node(s) with at most ${out.maxPerNode} each`,
    );
  return out;
}

let spawnValidator: ValidateFunction | undefined;

/**
 * The built request against the contract's SPAWN schema, so that a value the kernel would refuse (a
 * watchdog over a day, a budget under its minimum) is reported at its line now rather than by `up` later.
 */
function checkContract(
  src: Source,
  at: (...p: PathSeg[]) => PathSeg[],
  r: RawService,
  spawn: SpawnArgsBase,
): void {
  if (!spawnValidator) {
    const ajv = new Ajv2020({ allErrors: false, allowUnionTypes: true, strict: false, verbose: true });
    ajv.addSchema(SCHEMA_DEFS);
    spawnValidator = ajv.compile(REQUEST_SCHEMAS.SPAWN!);
  }
  if (spawnValidator(spawn)) return;
  const e = spawnValidator.errors![0];
  const wire = pointerToPath(e.instancePath).map((x) => (/^\d+$/.test(String(x)) ? Number(x) : x));
  throw src.error(
    at(...originOf(wire, r)),
    `SPAWN's ${fieldName(wire) || 'request'} ${e.message ?? 'is not valid'}${got(e.data)}`,
  );
}

const RESTART_OBJECT_FIELDS: Record<string, string> = {
  max_restarts: 'max_attempts',
  restart_window: 'window',
  backoff_initial_ms: 'delay',
  backoff_max_ms: 'max_delay',
  backoff_multiplier: 'multiplier',
};
const LIMIT_FIELDS: Record<string, string> = { cpu_quota: 'cpu', cpu_period: 'cpu', max_pids: 'pids' };

/** The clove.yaml field a SPAWN field was built from. */
function originOf(wire: PathSeg[], r: RawService): PathSeg[] {
  const [first, second] = wire;
  if (
    first in RESTART_OBJECT_FIELDS &&
    r[first as keyof RawService] === undefined &&
    typeof r.restart_policy === 'object'
  ) {
    return ['restart_policy', RESTART_OBJECT_FIELDS[first]];
  }
  if (first === 'watchdog_ms' && r.watchdog !== undefined) return ['watchdog'];
  if (first === 'limits' && second !== undefined) return ['limits', LIMIT_FIELDS[second as string] ?? second];
  return wire;
}

/** env_file(s) merged in order, then `env` on top; values are strings as the wire wants. */
function environment(
  src: Source,
  dir: string,
  name: string,
  r: RawService,
  hostEnv: NodeJS.ProcessEnv,
): Record<string, string> {
  const out: Record<string, string> = {};
  if (r.env_file !== undefined) {
    const list = Array.isArray(r.env_file) ? r.env_file : [r.env_file];
    list.forEach((entry, i) => {
      const p: PathSeg[] = Array.isArray(r.env_file)
        ? ['agents', name, 'env_file', i]
        : ['agents', name, 'env_file'];
      const rel = typeof entry === 'string' ? entry : entry.path;
      const required = typeof entry === 'string' ? true : entry.required !== false;
      const file = path.resolve(dir, rel);
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (err) {
        if (!required) return;
        const code = (err as NodeJS.ErrnoException).code;
        throw src.error(
          p,
          `cannot read ${file}: ${code === 'ENOENT' ? 'it does not exist' : (code ?? String(err))}`,
        );
      }
      Object.assign(out, dotenv.parse(text));
    });
  }
  const fromHost = (k: string): string | undefined => hostEnv[k];
  if (Array.isArray(r.env)) {
    for (const item of r.env) {
      const eq = item.indexOf('=');
      if (eq >= 0) out[item.slice(0, eq)] = item.slice(eq + 1);
      else if (fromHost(item) !== undefined) out[item] = fromHost(item)!;
    }
  } else if (r.env) {
    for (const [k, val] of Object.entries(r.env)) {
      if (val === null) {
        if (fromHost(k) !== undefined) out[k] = fromHost(k)!;
      } else out[k] = String(val);
    }
  }
  return out;
}

function dependency(src: Source, p: PathSeg[], d: string, all: string[], key = false): string {
  if (!all.includes(d)) {
    throw src.error(
      p,
      `unknown service "${d}"${didYouMean(d, all)}; the services are ${all.join(', ')}`,
      key,
    );
  }
  return d;
}

/** Quotas in the wire's shape and units; `deny` is refused for memory and time (schema) — checked again here. */
function quotas(src: Source, p: PathSeg[], raw: Record<string, QuotaRaw>): Quotas {
  const out: Quotas = {};
  for (const [name, q] of Object.entries(raw)) {
    const unit = QUOTA_UNITS[name as QuotaName];
    const obj = typeof q === 'object' ? q : undefined;
    const value = obj ? obj.limit : (q as Size);
    const at = obj ? [...p, name, 'limit'] : [...p, name];
    let limit: number;
    try {
      limit =
        unit === 'size' ? parseSize(value) : unit === 'duration' ? parseDuration(value, 'ms') : Number(value);
    } catch (err) {
      throw src.error(at, (err as Error).message);
    }
    if (obj?.policy === 'deny' && NO_DENY_QUOTAS.includes(name)) {
      throw src.error([...p, name, 'policy'], `${name} cannot deny: use pause or kill`);
    }
    out[name] = obj?.policy ? { limit, policy: obj.policy } : { limit };
  }
  return out;
}

/** A service's own labels as strings; `clove.*` belongs to `clove up`, and the contract caps the count. */
function userLabels(src: Source, p: PathSeg[], raw: RawService['labels']): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(raw)) {
    raw.forEach((item, i) => {
      const eq = item.indexOf('=');
      const k = item.slice(0, eq);
      if (k.startsWith('clove.')) throw src.error([...p, i], `"${k}": clove.* labels are set by clove up`);
      out[k] = item.slice(eq + 1);
    });
  } else if (raw) {
    for (const [k, v] of Object.entries(raw)) {
      if (k.startsWith('clove.'))
        throw src.error([...p, k], `"${k}": clove.* labels are set by clove up`, true);
      out[k] = String(v);
    }
  }
  for (const [k, v] of Object.entries(out)) {
    if (v.length > 256)
      throw src.error([...p, k], `label values are at most 256 characters (got ${v.length})`);
  }
  if (Object.keys(out).length > MAX_LABELS - 4) {
    throw src.error(
      p,
      `at most ${MAX_LABELS - 4} labels (clove up adds 4 of the ${MAX_LABELS} an agent may have)`,
    );
  }
  return out;
}

/** JSON with sorted keys, so that the hash does not depend on the order keys were written in. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

function configHash(
  spawn: SpawnArgsBase,
  labels: Record<string, string>,
  healthcheck: Healthcheck | null,
): string {
  const what = Object.keys(labels).length ? { spawn, labels, healthcheck } : { spawn, healthcheck };
  return crypto.createHash('sha256').update(canonical(what)).digest('hex').slice(0, 12);
}

/** Dependencies first; among services free to start, file order. A cycle is an error naming it. */
function startOrder(src: Source, names: string[], byName: Map<string, Service>): string[] {
  const done = new Set<string>();
  const order: string[] = [];
  while (order.length < names.length) {
    const next = names.find(
      (n) => !done.has(n) && byName.get(n)!.dependsOn.every((d) => done.has(d.service)),
    );
    if (next === undefined) {
      const cycle = findCycle(
        names.filter((n) => !done.has(n)),
        byName,
      );
      throw src.error(['agents', cycle[0], 'depends_on'], `dependency cycle: ${cycle.join(' → ')}`);
    }
    done.add(next);
    order.push(next);
  }
  return order;
}

function findCycle(left: string[], byName: Map<string, Service>): string[] {
  // Every service left waits on another one left, so walking first dependencies must revisit a service.
  const seen: string[] = [];
  let cur = left[0];
  while (!seen.includes(cur)) {
    seen.push(cur);
    cur = byName
      .get(cur)!
      .dependsOn.map((d) => d.service)
      .find((d) => left.includes(d))!;
  }
  return [...seen.slice(seen.indexOf(cur)), cur];
}

/**
 * A command line split into argv as a shell splits words (quotes, escapes; `$VAR` stays as written:
 * interpolation is `${VAR}`'s job). Pipes, redirections, globs and comments would need a shell: refused.
 */
function words(line: string): string[] {
  const out: string[] = [];
  for (const t of shellParse(line, (k) => `$${k}`)) {
    if (typeof t !== 'string')
      throw new Error(
        `shell syntax ${JSON.stringify('op' in t ? t.op : 'comment' in t ? '#' : t)} needs a shell: write ["sh", "-c", ${JSON.stringify(line)}]`,
      );
    out.push(t);
  }
  if (!out.length) throw new Error('is an empty command line');
  return out;
}

/**
 * The `.env` file beside clove.yaml, as compose reads it: its variables are there for `${VAR}`
 * interpolation, under the caller's environment (which wins). Absent: nothing.
 */
function projectDotEnv(dir: string): Record<string, string> {
  const f = path.join(dir, '.env');
  let text: string;
  try {
    text = fs.readFileSync(f, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new ComposeError(f, `cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return dotenv.parse(text);
}
