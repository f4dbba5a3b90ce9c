/** State family: STORE, FETCH, DELETE, KEYS (docs/protocol.md, "State store"). */
import { defineFamily, InvalidRequestError, type Caller } from '../../core/family.js';

/** An agent's identity `<name>#<serial>` (docs/protocol.md §2): what it owns in the store is keyed by it. */
function identity(c: Caller): string {
  if (!c.identity) throw new Error(`agent ${c.id} has no identity`);
  return c.identity;
}

/** Who owns what a caller writes: agents by identity (stable across restarts, never reused), others by role. */
function owner(c: Caller): string {
  return c.role === 'agent' ? `agent:${identity(c)}` : c.role === 'operator' ? 'operator' : `client:${c.id}`;
}

/** The namespace of a caller's agent-scope keys. */
function ns(c: Caller): string {
  return c.role === 'agent' ? identity(c) : c.role === 'operator' ? '@operator' : `@client-${c.id}`;
}

function keyOf(key: string | undefined): string {
  if (!key) throw new InvalidRequestError('key is required');
  if (Buffer.byteLength(key) > 1024)
    throw new InvalidRequestError('invalid request: key longer than 1024 bytes');
  return key;
}

export default defineFamily(({ services }) => {
  const { store, publish, principals } = services;
  return {
    name: 'state',
    handlers: {
      STORE: ({ caller }, req) => {
        const key = keyOf(req.key);
        if (req.ttl !== undefined && req.ttl <= 0)
          throw new InvalidRequestError('invalid request: ttl must be a positive number of seconds');
        const budgets = principals.budgets(caller.id);
        store.put(
          key,
          req.value ?? null,
          req.scope,
          owner(caller),
          ns(caller),
          req.ttl,
          caller.role === 'operator',
          { keys: budgets.state_keys, bytes: budgets.state_bytes },
        );
        if (req.scope === 'global')
          publish('STATE_CHANGED', { key, action: 'store', agent_id: caller.id }, caller.id);
        return { success: true, key };
      },
      FETCH: ({ caller }, req) => {
        const e = store.get(keyOf(req.key), req.scope, ns(caller));
        return e
          ? { success: true, exists: true, value: e.value, scope: e.scope }
          : { success: true, exists: false, value: null };
      },
      DELETE: ({ caller }, req) => {
        const key = keyOf(req.key);
        const deleted = store.delete(key, req.scope, owner(caller), ns(caller), caller.role === 'operator');
        if (deleted) publish('STATE_CHANGED', { key, action: 'delete', agent_id: caller.id }, caller.id);
        return { success: true, deleted };
      },
      KEYS: ({ caller }, req) => {
        const { keys, more } = store.keys(req.prefix, ns(caller), req.limit, req.after);
        return { success: true, keys, count: keys.length, more };
      },
    },
  };
});
