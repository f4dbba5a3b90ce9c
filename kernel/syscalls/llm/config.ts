/**
 * The operator's LLM providers (docs/protocol.md "THINK"): a JSON file named by `CLOVE_LLM_PROVIDERS`,
 * else `<data-dir>/llm.json`. It may hold API keys, and whoever can write it can point a provider at
 * their own server and have the kernel send it a key: it must be a regular file owned by the kernel's
 * uid, readable and writable by nobody else (0600 or stricter). Read once, when the family is built.
 */
import path from 'node:path';
import { readOperatorJson } from '../../core/family.js';

export const PROVIDERS_ENV = 'CLOVE_LLM_PROVIDERS';

export type ProviderKind = 'openai' | 'anthropic' | 'gemini';
export const KINDS: readonly ProviderKind[] = ['openai', 'anthropic', 'gemini'];

const DEFAULT_BASE_URL: Record<ProviderKind, string> = {
  openai: 'https://api.openai.com/v1',
  anthropic: 'https://api.anthropic.com',
  gemini: 'https://generativelanguage.googleapis.com/v1beta',
};

export interface ProviderConfig {
  name: string;
  kind: ProviderKind;
  /** Without a trailing slash. */
  baseUrl: string;
  /** Never leaves the kernel except towards this provider. */
  apiKey?: string;
  defaultModel: string;
  /** Models this provider serves (`*` at the end: a prefix); empty: any model named with `provider`. */
  models: string[];
  /** Calls to this provider running at once (the global cap still applies). */
  maxConcurrency: number;
  /** Output tokens asked for when a THINK names none. */
  maxTokens: number;
  /** A whole call: connecting, waiting and streaming. */
  timeoutMs: number;
  stream: boolean;
  /** `openai` kind: the request field carrying the output limit (`max_completion_tokens` for newer OpenAI models). */
  maxTokensParam: string;
  /** Extra request headers (e.g. a gateway's), secret like the key. */
  headers: Record<string, string>;
}

export interface LlmConfig {
  /** Where the configuration was read from (null: no file). */
  source: string | null;
  providers: ProviderConfig[];
  defaultProvider: string | null;
  /** Provider calls running at once, all providers together. */
  maxConcurrency: number;
  /** THINKs one agent may have waiting (not yet running); beyond, `quota_exceeded`. */
  maxQueuePerAgent: number;
  /** Answer bytes kept per call; a longer answer is cut (`finish_reason: length`). */
  maxContentBytes: number;
  /** THINK_STREAMs one caller may have open (not finished, cancelled or dropped); beyond, `quota_exceeded`. */
  maxStreamsPerAgent: number;
  /** A stream nobody has asked for (THINK_STREAM_NEXT) this long is dropped, its call cancelled. */
  streamIdleMs: number;
  /** Why there is no usable configuration (a reply says it), when there is none. */
  error?: string;
}

export const DEFAULTS = {
  maxConcurrency: 4,
  maxQueuePerAgent: 16,
  maxContentBytes: 1024 * 1024,
  maxStreamsPerAgent: 8,
  streamIdleMs: 60_000,
  providerMaxTokens: 4096,
  timeoutMs: 120_000,
};

function empty(source: string | null, error?: string): LlmConfig {
  return {
    source,
    providers: [],
    defaultProvider: null,
    maxConcurrency: DEFAULTS.maxConcurrency,
    maxQueuePerAgent: DEFAULTS.maxQueuePerAgent,
    maxContentBytes: DEFAULTS.maxContentBytes,
    maxStreamsPerAgent: DEFAULTS.maxStreamsPerAgent,
    streamIdleMs: DEFAULTS.streamIdleMs,
    ...(error ? { error } : {}),
  };
}

class ConfigError extends Error {}

function int(o: Record<string, unknown>, key: string, dflt: number, min: number, where: string): number {
  const v = o[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    throw new ConfigError(`${where}.${key} must be an integer >= ${min}`);
  return v;
}

function str(o: Record<string, unknown>, key: string, where: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '') throw new ConfigError(`${where}.${key} must be a non-empty string`);
  return v;
}

function provider(v: unknown, i: number, env: NodeJS.ProcessEnv): ProviderConfig {
  let where = `providers[${i}]`;
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${where} must be an object`);
  const o = v as Record<string, unknown>;
  const name = str(o, 'name', where);
  if (!name) throw new ConfigError(`${where}.name is required`);
  where = `provider '${name}'`;
  const kind = o.kind as ProviderKind;
  if (!KINDS.includes(kind)) throw new ConfigError(`${where}: kind must be one of ${KINDS.join(', ')}`);
  const baseUrl = (str(o, 'base_url', where) ?? DEFAULT_BASE_URL[kind]).replace(/\/+$/, '');
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new ConfigError(`${where}: base_url is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ConfigError(`${where}: base_url must be http or https`);
  if (url.username || url.password || url.search || url.hash)
    throw new ConfigError(`${where}: base_url must not carry credentials, a query or a fragment`);
  const literal = str(o, 'api_key', where);
  const envName = str(o, 'api_key_env', where);
  if (literal && envName) throw new ConfigError(`${where}: api_key and api_key_env are exclusive`);
  let apiKey = literal;
  if (envName) {
    apiKey = env[envName];
    if (!apiKey) throw new ConfigError(`${where}: api_key_env names ${envName}, which is not set`);
  }
  const defaultModel = str(o, 'default_model', where);
  if (!defaultModel) throw new ConfigError(`${where}.default_model is required`);
  const models = o.models === undefined ? [] : o.models;
  if (!Array.isArray(models) || models.some((m) => typeof m !== 'string' || m === ''))
    throw new ConfigError(`${where}.models must be an array of model names`);
  const headers = o.headers === undefined ? {} : o.headers;
  if (
    !headers ||
    typeof headers !== 'object' ||
    Array.isArray(headers) ||
    Object.values(headers).some((h) => typeof h !== 'string')
  )
    throw new ConfigError(`${where}.headers must be an object of strings`);
  if (o.stream !== undefined && typeof o.stream !== 'boolean')
    throw new ConfigError(`${where}.stream must be a boolean`);
  return {
    name,
    kind,
    baseUrl,
    ...(apiKey ? { apiKey } : {}),
    defaultModel,
    models: models as string[],
    maxConcurrency: int(o, 'max_concurrency', Number.POSITIVE_INFINITY, 1, where),
    maxTokens: int(o, 'max_tokens', DEFAULTS.providerMaxTokens, 1, where),
    timeoutMs: int(o, 'timeout_ms', DEFAULTS.timeoutMs, 1, where),
    stream: (o.stream as boolean | undefined) ?? true,
    maxTokensParam: str(o, 'max_tokens_param', where) ?? 'max_tokens',
    headers: headers as Record<string, string>,
  };
}

/** Parses a configuration object (the file's JSON); throws with a sentence naming the bad field. */
export function parseConfig(json: unknown, source: string | null, env = process.env): LlmConfig {
  if (!json || typeof json !== 'object' || Array.isArray(json))
    throw new ConfigError('the configuration must be a JSON object with a "providers" array');
  const o = json as Record<string, unknown>;
  if (!Array.isArray(o.providers)) throw new ConfigError('"providers" must be an array');
  const providers = o.providers.map((p, i) => provider(p, i, env));
  const names = new Set<string>();
  for (const p of providers) {
    if (names.has(p.name)) throw new ConfigError(`provider '${p.name}' is defined twice`);
    names.add(p.name);
  }
  const defaultProvider = str(o, 'default_provider', 'configuration') ?? providers[0]?.name ?? null;
  if (defaultProvider !== null && !names.has(defaultProvider))
    throw new ConfigError(`default_provider '${defaultProvider}' is not a provider`);
  return {
    source,
    providers,
    defaultProvider,
    maxConcurrency: int(o, 'max_concurrency', DEFAULTS.maxConcurrency, 1, 'configuration'),
    maxQueuePerAgent: int(o, 'max_queue_per_agent', DEFAULTS.maxQueuePerAgent, 0, 'configuration'),
    maxContentBytes: int(o, 'max_content_bytes', DEFAULTS.maxContentBytes, 1024, 'configuration'),
    maxStreamsPerAgent: int(o, 'max_streams_per_agent', DEFAULTS.maxStreamsPerAgent, 0, 'configuration'),
    streamIdleMs: int(o, 'stream_idle_ms', DEFAULTS.streamIdleMs, 100, 'configuration'),
  };
}

/**
 * The configuration in force: the file named by `CLOVE_LLM_PROVIDERS`, else `<dataDir>/llm.json` when it
 * exists, else none. A file that is unsafe or invalid gives no providers and an `error` saying why
 * (the kernel keeps running; THINK replies with it).
 */
export function loadConfig(dataDir: string, env = process.env, uid = process.getuid?.() ?? 0): LlmConfig {
  const named = env[PROVIDERS_ENV];
  const file = named ? path.resolve(named) : path.join(dataDir, 'llm.json');
  const read = readOperatorJson(file, 'LLM providers file', Boolean(named), uid);
  if (read.kind === 'absent') return empty(null);
  if (read.kind === 'refused') return empty(file, read.error);
  try {
    return parseConfig(read.json, file, env);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return empty(file, `LLM providers file ${file} is not used: ${e.message}`);
  }
}

/** True when `model` is one `p` serves (its `models` list; `*` at the end matches a prefix). */
export function serves(p: ProviderConfig, model: string): boolean {
  return p.models.some((m) => (m.endsWith('*') ? model.startsWith(m.slice(0, -1)) : m === model));
}
