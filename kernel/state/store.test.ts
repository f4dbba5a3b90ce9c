import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { StateStore } from './store.js';
import { QuotaExceededError } from '../core/errors.js';

let dir: string;
let store: StateStore;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clv-store-'));
  store = new StateStore({ path: path.join(dir, 'state.db') });
});
afterEach(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('StateStore budgets and pages', () => {
  it('bounds the keys and bytes an owner holds, across scopes; overwrites and deletes give back', () => {
    const budget = { keys: 3, bytes: 100 };
    store.put('a', 'x'.repeat(10), 'global', 'agent:w', 'w', undefined, false, budget);
    store.put('b', 1, 'agent', 'agent:w', 'w', undefined, false, budget);
    store.put('c', 2, 'session', 'agent:w', 'w', undefined, false, budget);
    expect(() => store.put('d', 3, 'global', 'agent:w', 'w', undefined, false, budget)).toThrow(
      QuotaExceededError,
    );
    // Overwriting one's own key is not a new key; a bigger value counts its growth.
    store.put('a', 'y'.repeat(20), 'global', 'agent:w', 'w', undefined, false, budget);
    expect(() => store.put('a', 'y'.repeat(200), 'global', 'agent:w', 'w', undefined, false, budget)).toThrow(
      /state_bytes/,
    );
    expect(store.delete('c', undefined, 'agent:w', 'w', false)).toBe(true);
    store.put('d', 3, 'global', 'agent:w', 'w', undefined, false, budget);
    // Another owner has budgets of its own.
    store.put('e', 4, 'global', 'agent:v', 'v', undefined, false, budget);
  });

  it('counts survive a restart of the store (recounted at open)', () => {
    const budget = { keys: 2, bytes: 1000 };
    store.put('a', 1, 'agent', 'agent:w', 'w', undefined, false, budget);
    store.put('b', 1, 'agent', 'agent:w', 'w', undefined, false, budget);
    store.close();
    store = new StateStore({ path: path.join(dir, 'state.db') });
    expect(() => store.put('c', 1, 'agent', 'agent:w', 'w', undefined, false, budget)).toThrow(/state_keys/);
  });

  it('KEYS is a page at a time, in order, with `more`', () => {
    for (let i = 0; i < 25; i++)
      store.put(`k${String(i).padStart(2, '0')}`, i, 'global', 'operator', '@op', undefined, true);
    store.put('own', 1, 'agent', 'agent:w', 'w', undefined, false);
    const first = store.keys('k', 'w', 10);
    expect(first).toEqual({
      keys: Array.from({ length: 10 }, (_, i) => `k${String(i).padStart(2, '0')}`),
      more: true,
    });
    const last = store.keys('k', 'w', 10, 'k19');
    expect(last).toEqual({ keys: ['k20', 'k21', 'k22', 'k23', 'k24'], more: false });
    expect(store.keys('', 'w', 1000).keys).toContain('own');
    expect(store.keys('', 'v', 1000).keys).not.toContain('own');
  });
});
