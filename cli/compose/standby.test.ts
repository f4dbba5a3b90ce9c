/**
 * `standby:` and `spare:` of a clove.yaml service (docs/supervision.md "Warm standby", "Spare sandbox"):
 * the SPAWN `standby` and `spare` of every replica.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCompose } from './index.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function load(yaml: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-compose-standby-'));
  dirs.push(dir);
  fs.writeFileSync(path.join(dir, 'clove.yaml'), yaml);
  fs.writeFileSync(path.join(dir, 'a.py'), '');
  return loadCompose(path.join(dir, 'clove.yaml'), { env: {} });
}

describe('clove.yaml standby:', () => {
  it('becomes the SPAWN standby of the service', () => {
    const p = load('agents:\n  a:\n    script: a.py\n    restart_policy: on-failure\n    standby: 1\n');
    expect(p.services[0].spawn.standby).toBe(1);
  });
  it('is left to the kernel when absent, and refused when not 0 or 1', () => {
    expect(load('agents:\n  a:\n    script: a.py\n').services[0].spawn.standby).toBeUndefined();
    expect(() => load('agents:\n  a:\n    script: a.py\n    standby: 2\n')).toThrow(/standby/);
    expect(() => load('agents:\n  a:\n    script: a.py\n    standby: yes\n')).toThrow(/standby/);
  });
});

describe('clove.yaml spare:', () => {
  it('becomes the SPAWN spare of the service; absent, it is left to the kernel; not a boolean, refused', () => {
    const p = load('agents:\n  a:\n    script: a.py\n    restart_policy: always\n    spare: false\n');
    expect(p.services[0].spawn.spare).toBe(false);
    expect(load('agents:\n  a:\n    script: a.py\n').services[0].spawn.spare).toBeUndefined();
    expect(() => load('agents:\n  a:\n    script: a.py\n    spare: 0\n')).toThrow(/spare/);
  });
});
