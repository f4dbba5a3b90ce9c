/**
 * The relay's tokens (docs/relay.md): one per machine (a kernel dials in with it) and one per user (a
 * person or a script calls the relay's API with it, optionally scoped to some machines). A token is shown
 * once when it is made; the file keeps only its SHA-256, so that reading the file never yields a token.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export type TokenKind = 'machine' | 'user';

export interface TokenEntry {
  /** Short public id of the token (its first hex digits), for `token list` and revocation. */
  id: string;
  kind: TokenKind;
  /** The machine's id (kind machine) or the user's name (kind user). */
  name: string;
  /** Users only: the machines the token reaches; absent = every machine. */
  machines?: string[];
  /** Hex SHA-256 of the token. */
  hash: string;
  created_at: string;
}

/** Names of machines and users: what may appear in a URL path segment and a log line unquoted. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class TokenError extends Error {}

/** Throws a TokenError naming `what` unless `name` is a valid machine or user name. */
export function checkName(what: string, name: string): void {
  if (!NAME.test(name))
    throw new TokenError(`${what} "${name}" is not a valid name (letters, digits, . _ -; at most 64)`);
}

function sha256(s: string): Buffer {
  return crypto.createHash('sha256').update(s).digest();
}

/**
 * The token file `<dir>/tokens.json` (0600 in a 0700 directory). The relay re-reads it when it changes
 * on disk, so that `clove relay token add/revoke` run beside a live relay take effect at once.
 */
export class TokenStore {
  readonly file: string;
  private entries: TokenEntry[] = [];
  private mtimeMs = -1;
  private size = -1;
  private ino = -1;

  constructor(dir: string) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = path.join(dir, 'tokens.json');
    this.reload();
  }

  /** Reads the file again if it changed since the last read; true when it did. */
  reload(): boolean {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.file);
    } catch {
      const changed = this.entries.length > 0;
      this.entries = [];
      this.mtimeMs = -1;
      return changed;
    }
    if (st.mtimeMs === this.mtimeMs && st.size === this.size && st.ino === this.ino) return false;
    const text = fs.readFileSync(this.file, 'utf8');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new TokenError(`${this.file} is not valid JSON: ${(e as Error).message}`);
    }
    const list = (parsed as { tokens?: unknown }).tokens;
    if (!Array.isArray(list)) throw new TokenError(`${this.file}: "tokens" must be a list`);
    this.entries = list as TokenEntry[];
    this.mtimeMs = st.mtimeMs;
    this.size = st.size;
    this.ino = st.ino;
    return true;
  }

  list(): TokenEntry[] {
    return this.entries.map((e) => ({ ...e }));
  }

  /** Makes a token; returns it (the only time it exists in clear) with its entry. */
  add(kind: TokenKind, name: string, machines?: string[]): { token: string; entry: TokenEntry } {
    checkName(kind, name);
    for (const m of machines ?? []) checkName('machine', m);
    this.reload();
    const secret = crypto.randomBytes(32).toString('hex');
    const token = `clove_${kind === 'machine' ? 'm' : 'u'}_${secret}`;
    const entry: TokenEntry = {
      id: secret.slice(0, 8),
      kind,
      name,
      ...(kind === 'user' && machines?.length ? { machines } : {}),
      hash: sha256(token).toString('hex'),
      created_at: new Date().toISOString(),
    };
    this.write([...this.entries, entry]);
    return { token, entry };
  }

  /**
   * Removes tokens by id, or every token of a machine or user (`machine:NAME`, `user:NAME`); returns how
   * many went.
   */
  revoke(which: string): number {
    this.reload();
    const [kind, name] = which.includes(':') ? which.split(':', 2) : [undefined, undefined];
    const keep = this.entries.filter((e) => (kind ? !(e.kind === kind && e.name === name) : e.id !== which));
    const removed = this.entries.length - keep.length;
    if (removed) this.write(keep);
    return removed;
  }

  /** The entry a presented token belongs to, or undefined; every entry is compared in constant time. */
  verify(token: string): TokenEntry | undefined {
    this.reload();
    const h = sha256(token);
    let found: TokenEntry | undefined;
    for (const e of this.entries) {
      const stored = Buffer.from(e.hash, 'hex');
      if (stored.length === h.length && crypto.timingSafeEqual(stored, h)) found = e;
    }
    return found;
  }

  /** Whether the entry with this id is still there (a revoked token's live sessions are closed). */
  has(id: string): boolean {
    return this.entries.some((e) => e.id === id);
  }

  /** Writes the whole list atomically (temporary file, 0600, rename). */
  private write(entries: TokenEntry[]): void {
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify({ tokens: entries }, null, 2)}\n`, { mode: 0o600 });
    fs.chmodSync(tmp, 0o600);
    fs.renameSync(tmp, this.file);
    this.entries = entries;
    const st = fs.statSync(this.file);
    this.mtimeMs = st.mtimeMs;
    this.size = st.size;
    this.ino = st.ino;
  }
}
