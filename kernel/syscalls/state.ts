/**
 * State store syscalls: STORE, FETCH, DELETE, KEYS (docs/protocol.md, "State store").
 */
import { InvalidRequestError } from '../errors.js';
import type { Caller, Kernel } from '../kernel.js';
import type { Scope } from '../state/store.js';
import { type Payload, optNumber, optString } from '../validate.js';
import type { HandlerTable } from './index.js';

const SCOPES: readonly Scope[] = ['global', 'agent', 'session'];

function scopeOf(p: Payload, fallback: Scope | undefined): Scope | undefined {
  const s = optString(p, 'scope');
  if (s === undefined) return fallback;
  if (!(SCOPES as readonly string[]).includes(s))
    throw new InvalidRequestError(`invalid request: scope must be one of ${SCOPES.join(', ')}`);
  return s as Scope;
}

/** Who owns what a caller writes: agents by name (stable across restarts), others by role. */
function owner(c: Caller): string {
  const p = c.principal;
  return p.role === 'agent' ? `agent:${p.name}` : p.role === 'operator' ? 'operator' : `client:${p.id}`;
}

function ns(c: Caller): string {
  const p = c.principal;
  return p.role === 'agent' ? p.name : p.role === 'operator' ? '@operator' : `@client-${p.id}`;
}

function keyOf(p: Payload): string {
  const key = optString(p, 'key');
  if (!key) throw new InvalidRequestError('key is required');
  if (Buffer.byteLength(key) > 1024)
    throw new InvalidRequestError('invalid request: key longer than 1024 bytes');
  return key;
}

export const state: HandlerTable = {
  STORE: {
    fn: (k: Kernel, c, p) => {
      const key = keyOf(p);
      const scope = scopeOf(p, 'global')!;
      const ttl = optNumber(p, 'ttl');
      if (ttl !== undefined && ttl <= 0)
        throw new InvalidRequestError('invalid request: ttl must be a positive number of seconds');
      k.store.put(key, p.value ?? null, scope, owner(c), ns(c), ttl, c.principal.role === 'operator');
      if (scope === 'global')
        k.publish('STATE_CHANGED', { key, action: 'store', agent_id: c.principal.id }, c.principal.id);
      return { success: true, key };
    },
  },
  FETCH: {
    fn: (k, c, p) => {
      const key = keyOf(p);
      const e = k.store.get(key, scopeOf(p, undefined), ns(c));
      return e
        ? { success: true, exists: true, value: e.value, scope: e.scope }
        : { success: true, exists: false, value: null };
    },
  },
  DELETE: {
    fn: (k, c, p) => {
      const key = keyOf(p);
      const deleted = k.store.delete(
        key,
        scopeOf(p, undefined),
        owner(c),
        ns(c),
        c.principal.role === 'operator',
      );
      if (deleted)
        k.publish('STATE_CHANGED', { key, action: 'delete', agent_id: c.principal.id }, c.principal.id);
      return { success: true, deleted };
    },
  },
  KEYS: {
    fn: (k, c, p) => {
      const keys = k.store.keys(optString(p, 'prefix') ?? '', ns(c));
      return { success: true, keys, count: keys.length };
    },
  },
};
