/**
 * `placement:` in clove.yaml (load.ts: shape, line/column errors) and the choice of nodes for new
 * replicas (placement.ts), as pure functions. The same against real kernels: cli/cluster.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ComposeError, loadCompose } from './index.js';
import { PlacementError, placeReplicas, type NodeLoad } from './placement.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function load(yaml: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-placement-'));
  dirs.push(dir);
  fs.writeFileSync(path.join(dir, 'a.py'), '');
  fs.writeFileSync(path.join(dir, 'clove.yaml'), yaml);
  return loadCompose(path.join(dir, 'clove.yaml'), { env: {} });
}

function failure(yaml: string): ComposeError {
  try {
    load(yaml);
  } catch (e) {
    expect(e).toBeInstanceOf(ComposeError);
    return e as ComposeError;
  }
  throw new Error('expected a ComposeError');
}

const svc = (placement: string, replicas = 4) =>
  `agents:\n  w:\n    script: a.py\n    replicas: ${replicas}\n    placement: ${placement}\n`;

const node = (name: string, free_memory: number, idle_cpu = 0.5, alive = true): NodeLoad => ({
  node: name,
  free_memory,
  idle_cpu,
  alive,
});

describe('placement in clove.yaml', () => {
  it('is read with its defaults; without it a service has none', () => {
    expect(load(svc('{nodes: [n1, n2], max_per_node: 2}')).services[0].placement).toEqual({
      nodes: ['n1', 'n2'],
      spread: true,
      maxPerNode: 2,
    });
    expect(load(svc('{spread: false}')).services[0].placement).toEqual({
      nodes: null,
      spread: false,
      maxPerNode: null,
    });
    expect(load('agents:\n  w:\n    script: a.py\n').services[0].placement).toBeNull();
  });

  it('a bad field is an error at its line and column', () => {
    const bad = failure(svc('{nodes: [], spread: true}'));
    expect({ line: bad.line, field: bad.field }).toMatchObject({
      line: 5,
      field: 'agents.w.placement.nodes',
    });
    const unknown = failure(svc('{zone: a}'));
    expect(unknown.line).toBe(5);
    expect(unknown.detail).toMatch(/zone/);
    const zero = failure(svc('{max_per_node: 0}'));
    expect(zero.field).toBe('agents.w.placement.max_per_node');
  });

  it('replicas that cannot fit the listed nodes under max_per_node are an error of the file', () => {
    const e = failure(svc('{nodes: [n1, n2], max_per_node: 1}', 3));
    expect(e.field).toBe('agents.w.placement.max_per_node');
    expect(e.detail).toBe('3 replicas do not fit on 2 node(s) with at most 1 each');
  });
});

describe('placeReplicas', () => {
  const two = [node('n1', 8e9), node('n2', 4e9)];

  it('spreads: fewest replicas of the service first, then the most free memory', () => {
    expect(placeReplicas(two, new Map(), null, 4, 'w')).toEqual(['n1', 'n2', 'n1', 'n2']);
    // Two already on n1: the next two go to n2.
    expect(placeReplicas(two, new Map([['n1', 2]]), null, 2, 'w')).toEqual(['n2', 'n2']);
  });

  it('ties on memory are broken by idle CPU, then by name', () => {
    const nodes = [node('b', 1e9, 0.2), node('c', 1e9, 0.9), node('a', 1e9, 0.2)];
    expect(placeReplicas(nodes, new Map(), null, 3, 'w')).toEqual(['c', 'a', 'b']);
  });

  it('honours nodes: and skips dead ones; none alive is an error', () => {
    const nodes = [...two, node('n3', 16e9), node('n4', 32e9, 1, false)];
    const p = { nodes: ['n2', 'n3', 'n4'], spread: true, maxPerNode: null };
    expect(placeReplicas(nodes, new Map(), p, 3, 'w')).toEqual(['n3', 'n2', 'n3']);
    expect(() => placeReplicas(nodes, new Map(), { ...p, nodes: ['n4'] }, 1, 'w')).toThrow(PlacementError);
  });

  it('without spread fills the roomiest node up to max_per_node; no room left is an error', () => {
    const p = { nodes: null, spread: false, maxPerNode: 3 };
    expect(placeReplicas(two, new Map(), p, 4, 'w')).toEqual(['n1', 'n1', 'n1', 'n2']);
    expect(() =>
      placeReplicas(
        two,
        new Map([
          ['n1', 3],
          ['n2', 3],
        ]),
        p,
        1,
        'w',
      ),
    ).toThrow(/no room for 1 more replica/);
  });
});
