// The path globs of `permissions.filesystem` (read, write, blocked), as READ, WRITE and EXEC's `cwd` apply them.
//
// - `*` matches within one path component (never a `/`), `?` one character of a component, `[abc]`,
//   `[a-z]`, `[!x]` one character of a set; a backslash escapes the next character. A component that is
//   exactly `**` matches any number of components (none included); elsewhere `**` is `*`.
// - A pattern starting with `/` is anchored at the root. `~` or `~/...` starts at a home directory (the
//   agent's HOME; in blocklists also the kernel's). Any other pattern matches at any depth, as if it
//   began with a `**` component: `*/.env` is every `.env` below some directory, `*` alone every path.
//   (The public kernel's fnmatch matched such patterns against the whole path, so `*/.env` never reached
//   below the first directory: reference §5 #9.)
// - Blocked patterns also match everything below what they match (a blocked directory blocks its files:
//   `~/.ssh/*` covers `~/.ssh/keys/id`); allow patterns match exactly (`/tmp/*` is a direct child of
//   `/tmp`, `/tmp/**` the whole tree below it).
// - A pattern with a `..` component, or `~user`, matches nothing.

export type GlobKind = 'allow' | 'blocked';

const cache = new Map<string, RegExp | null>();
const CACHE_MAX = 4096;

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** One component of a pattern (no `/`) as a regular expression source. */
function component(c: string): string {
  let out = '';
  for (let i = 0; i < c.length; i++) {
    const ch = c[i];
    if (ch === '\\' && i + 1 < c.length) {
      out += escapeRe(c[++i]);
    } else if (ch === '*') {
      while (c[i + 1] === '*') i++;
      out += '[^/]*';
    } else if (ch === '?') {
      out += '[^/]';
    } else if (ch === '[') {
      const end = c.indexOf(']', i + 2);
      if (end < 0) {
        out += '\\[';
        continue;
      }
      let body = c.slice(i + 1, end);
      const negate = body[0] === '!' || body[0] === '^';
      if (negate) body = body.slice(1);
      const set = body.replace(/[\\\]^]/g, '\\$&');
      out += negate ? `[^/${set}]` : `(?![/])[${set}]`;
      i = end;
    } else {
      out += escapeRe(ch);
    }
  }
  return out;
}

/** Components as a regex source matching them joined by `/`. */
function components(parts: string[]): string {
  let out = '';
  for (let i = 0; i < parts.length; i++) {
    const last = i === parts.length - 1;
    if (parts[i] === '**') {
      // Any number of whole components: each with the separator after it, or (last) the rest.
      out += last ? '.*' : '(?:[^/]+/)*';
      continue;
    }
    out += component(parts[i]) + (last ? '' : '/');
  }
  return out;
}

function compile(pattern: string, home: string, kind: GlobKind): RegExp | null {
  let p = pattern;
  if (p === '~' || p.startsWith('~/'))
    p = home.replace(/\/+$/, '').replace(/[*?[\\]/g, '\\$&') + '/' + p.slice(2);
  else if (p.startsWith('~')) return null;
  const parts = p.split('/').filter((x) => x !== '' && x !== '.');
  if (parts.includes('..')) return null;
  if (!parts.length) {
    if (!p.startsWith('/')) return null;
    return kind === 'blocked' ? /^\/.*$/s : /^\/$/;
  }
  // Anchored at the root, or after any directory (every path starts with `/`).
  const head = p.startsWith('/') ? '/' : '(?:.*/)?';
  const tail = kind === 'blocked' ? '(?:/.*)?' : '';
  return new RegExp(`^${head}${components(parts)}${tail}$`, 's');
}

function regex(pattern: string, home: string, kind: GlobKind): RegExp | null {
  const key = `${kind}\0${home}\0${pattern}`;
  let r = cache.get(key);
  if (r === undefined) {
    if (cache.size >= CACHE_MAX) cache.clear();
    r = compile(pattern, home, kind);
    cache.set(key, r);
  }
  return r;
}

/**
 * The first pattern that matches the normalised absolute `file` (no `.`, `..` or repeated slashes), for
 * any of `homes`; undefined when none does.
 */
export function firstMatch(
  patterns: readonly string[],
  file: string,
  homes: readonly string[],
  kind: GlobKind,
): string | undefined {
  for (const pattern of patterns) {
    const hs = pattern.startsWith('~') ? homes : homes.slice(0, 1);
    for (const h of hs) if (regex(pattern, h, kind)?.test(file)) return pattern;
  }
  return undefined;
}
