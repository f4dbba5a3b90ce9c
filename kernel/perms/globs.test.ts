import { describe, expect, it } from 'vitest';
import { firstMatch, type GlobKind } from './globs.js';

/** The reference's default blocked paths (§3.8), as the presets carry them. */
const DEFAULT_BLOCKED_PATHS = [
  '/etc/shadow',
  '/etc/passwd',
  '~/.ssh/*',
  '~/.gnupg/*',
  '~/.aws/*',
  '~/.config/gcloud/*',
  '*/.env',
  '*/.git/config',
  '*/credentials*',
  '*/secrets*',
  '*/*token*',
  '*/*password*',
];

const m = (pattern: string, file: string, kind: GlobKind = 'allow', homes = ['/home/u']) =>
  firstMatch([pattern], file, homes, kind) !== undefined;

describe('filesystem globs', () => {
  it('`*` stays in one component, `**` crosses them', () => {
    expect(m('/tmp/*', '/tmp/a')).toBe(true);
    expect(m('/tmp/*', '/tmp/a/b')).toBe(false);
    expect(m('/tmp/*', '/tmp')).toBe(false);
    expect(m('/tmp/**', '/tmp/a/b/c')).toBe(true);
    expect(m('/tmp/**', '/tmp')).toBe(false);
    expect(m('/a/**/z', '/a/z')).toBe(true);
    expect(m('/a/**/z', '/a/b/c/z')).toBe(true);
    expect(m('/a/**/z', '/a/b/c/y')).toBe(false);
    expect(m('/tmp/*.txt', '/tmp/.hidden.txt')).toBe(true);
    expect(m('/tmp/?.txt', '/tmp/ab.txt')).toBe(false);
    expect(m('/tmp/[ab].txt', '/tmp/b.txt')).toBe(true);
    expect(m('/tmp/[!ab].txt', '/tmp/b.txt')).toBe(false);
    expect(m('/tmp/[!ab].txt', '/tmp/c.txt')).toBe(true);
    expect(m('/tmp/\\*', '/tmp/*')).toBe(true);
    expect(m('/tmp/\\*', '/tmp/x')).toBe(false);
    expect(m('/t.p/x', '/tmp/x')).toBe(false);
  });

  it('`*` alone and unanchored patterns match at any depth', () => {
    expect(m('*', '/')).toBe(true);
    expect(m('*', '/a/b/c')).toBe(true);
    expect(m('*/.env', '/.env')).toBe(true);
    expect(m('*/.env', '/srv/app/deep/.env')).toBe(true);
    expect(m('*/.env', '/srv/app/.envrc')).toBe(false);
    expect(m('*/*token*', '/a/b/api_token.txt')).toBe(true);
    expect(m('*/*token*', '/a/tokens/readme')).toBe(false);
    expect(m('.git/config', '/repo/.git/config')).toBe(true);
    expect(m('.git/config', '/repo/x.git/config')).toBe(false);
  });

  it('`~` is a home directory; `~user` and `..` never match', () => {
    expect(m('~/.ssh/*', '/home/u/.ssh/id_rsa')).toBe(true);
    expect(m('~/.ssh/*', '/root/.ssh/id_rsa')).toBe(false);
    expect(m('~/.ssh/*', '/root/.ssh/id_rsa', 'blocked', ['/home/u', '/root'])).toBe(true);
    expect(m('~', '/home/u')).toBe(true);
    expect(m('~/*', '/x', 'allow', ['/'])).toBe(true);
    expect(m('~bob/x', '/home/bob/x')).toBe(false);
    expect(m('/a/../b', '/b')).toBe(false);
    expect(m('', '/a', 'blocked')).toBe(false);
  });

  it('a blocked pattern covers everything below what it matches; an allow pattern does not', () => {
    expect(m('~/.ssh/*', '/home/u/.ssh/keys/id', 'blocked')).toBe(true);
    expect(m('~/.ssh/*', '/home/u/.ssh/keys/id', 'allow')).toBe(false);
    expect(m('/etc/shadow', '/etc/shadow', 'blocked')).toBe(true);
    expect(m('/etc/shadow', '/etc/shadow-', 'blocked')).toBe(false);
    expect(m('/', '/anything/at/all', 'blocked')).toBe(true);
    expect(m('/', '/anything', 'allow')).toBe(false);
  });

  it('the default blocklist', () => {
    const blocked = (f: string) => firstMatch(DEFAULT_BLOCKED_PATHS, f, ['/root'], 'blocked');
    for (const f of [
      '/etc/shadow',
      '/etc/passwd',
      '/root/.ssh/authorized_keys',
      '/root/.aws/credentials',
      '/root/.config/gcloud/x/y',
      '/srv/app/.env',
      '/srv/app/.git/config',
      '/var/lib/credentials.json',
      '/a/b/secrets.yaml',
      '/a/b/my_token',
      '/a/b/db_password.txt',
    ])
      expect(blocked(f), f).toBeDefined();
    for (const f of ['/etc/hostname', '/srv/app/main.py', '/root/notes.txt', '/srv/app/.environment/x'])
      expect(blocked(f), f).toBeUndefined();
  });
});
