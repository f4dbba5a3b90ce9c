/**
 * `permissions.mcp` (docs/mcp.md): presets, parsing, and the rule nobody hands out more than they hold
 * (`within`), for the grants the mcp family checks.
 */
import { describe, expect, it } from 'vitest';
import { levelOf, mcpServerGranted, parsePermissions, preset, within } from './permissions.js';

const withMcp = (mcp: string[]) => parsePermissions({ mcp });

describe('permissions.mcp', () => {
  it('is empty in every preset but unrestricted (*)', () => {
    expect(preset('standard').mcp).toEqual([]);
    expect(preset('minimal').mcp).toEqual([]);
    expect(preset('unrestricted').mcp).toEqual(['*']);
    expect(levelOf(parsePermissions('unrestricted'))).toBe('unrestricted');
    expect(levelOf(withMcp([]))).toBe('standard');
    expect(levelOf(withMcp(['a/b']))).toBe('custom');
  });

  it('accepts *, a server, server/* and server/<tool glob>; refuses anything else', () => {
    expect(withMcp(['*', 'files', 'files/*', 'git/log_*', 'x/a.b-c']).mcp).toHaveLength(5);
    for (const bad of ['', 'a b', 'a/', '/b', 'a/b c', 'x'.repeat(65)])
      expect(() => withMcp([bad]), bad).toThrow(/permissions.mcp entry/);
    expect(() => parsePermissions({ mcp: 'files' })).toThrow(/permissions.mcp must be an array/);
  });

  it('names servers for listing', () => {
    expect(mcpServerGranted(['files/read'], 'files')).toBe(true);
    expect(mcpServerGranted(['files/read'], 'git')).toBe(false);
    expect(mcpServerGranted(['*'], 'git')).toBe(true);
  });

  it('is never widened: a child grant must be the parent grant or inside a whole-server grant', () => {
    const parent = withMcp(['files', 'git/log']);
    expect(within(withMcp(['files/read']), parent)).toBe(true);
    expect(within(withMcp(['files/*']), parent)).toBe(true);
    expect(within(withMcp(['git/log']), parent)).toBe(true);
    expect(within(withMcp(['git/*']), parent)).toBe(false);
    expect(within(withMcp(['git/log_*']), parent)).toBe(false);
    expect(within(withMcp(['*']), parent)).toBe(false);
    expect(within(withMcp(['*']), withMcp(['*']))).toBe(true);
    expect(within(withMcp(['any/thing']), withMcp(['*']))).toBe(true);
    expect(within(withMcp([]), parent)).toBe(true);
    // Rights persisted before the field existed have none.
    const old = { ...parent } as Partial<typeof parent>;
    delete old.mcp;
    expect(within(withMcp(['files/read']), old as typeof parent)).toBe(false);
    expect(within(old as typeof parent, parent)).toBe(true);
  });
});
