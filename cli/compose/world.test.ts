/** `world:` of a clove.yaml service (docs/worlds.md): it becomes the SPAWN `world` of every replica. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCompose } from './index.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function load(yaml: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-compose-world-'));
  dirs.push(dir);
  fs.writeFileSync(path.join(dir, 'clove.yaml'), yaml);
  fs.writeFileSync(path.join(dir, 'a.py'), '');
  return loadCompose(path.join(dir, 'clove.yaml'), { env: {} });
}

describe('clove.yaml world:', () => {
  it('puts every agent of the service in the world', () => {
    const p = load('agents:\n  a:\n    script: a.py\n    world: test-world-0001\n');
    expect(p.services[0].spawn.world).toBe('test-world-0001');
  });
  it('refuses a world that is not a name', () => {
    expect(() => load('agents:\n  a:\n    script: a.py\n    world: 3\n')).toThrow(/world/);
  });
});
