/** `durable:` of a clove.yaml service (docs/durable.md): it becomes the SPAWN `durable` of every replica. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCompose } from './index.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function load(yaml: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-compose-durable-'));
  dirs.push(dir);
  fs.writeFileSync(path.join(dir, 'clove.yaml'), yaml);
  fs.writeFileSync(path.join(dir, 'a.py'), '');
  return loadCompose(path.join(dir, 'clove.yaml'), { env: {} });
}

describe('clove.yaml durable:', () => {
  it('journals every agent of the service', () => {
    const p = load(
      'agents:\n  a:\n    script: a.py\n    durable: true\n    budgets:\n      journal_bytes: 8M\n',
    );
    expect(p.services[0].spawn.durable).toBe(true);
    expect(p.services[0].spawn.budgets).toEqual({ journal_bytes: 8 * 1024 * 1024 });
  });
  it('is left to the kernel when absent, and refused when not a boolean', () => {
    expect(load('agents:\n  a:\n    script: a.py\n').services[0].spawn.durable).toBeUndefined();
    expect(() => load('agents:\n  a:\n    script: a.py\n    durable: sometimes\n')).toThrow(/durable/);
  });
});
