/**
 * The HTTP API's bearer token: `<data-dir>/http-token`, 32 random bytes as hex, made at the first start
 * with mode 0600 (only the kernel's owner, who is the operator, can read it) and kept across restarts so
 * that a dashboard URL stays valid.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const TOKEN_RE = /^[0-9a-f]{64}$/;

/** The token file's path in a data dir. */
export function tokenFile(dataDir: string): string {
  return path.join(dataDir, 'http-token');
}

/**
 * Reads the token, creating the file when it is missing (O_EXCL: two kernels racing on one data dir
 * never write two tokens). A file that holds something else, or that others may read, is replaced:
 * a token others could read is no secret.
 */
export function ensureToken(dataDir: string): string {
  const file = tokenFile(dataDir);
  try {
    const st = fs.statSync(file);
    const text = fs.readFileSync(file, 'utf8').trim();
    if (TOKEN_RE.test(text) && (st.mode & 0o077) === 0) return text;
    fs.rmSync(file, { force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const token = crypto.randomBytes(32).toString('hex');
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    fs.writeSync(fd, `${token}\n`);
  } finally {
    fs.closeSync(fd);
  }
  return token;
}

/** Constant-time comparison of a presented token with the kernel's. */
export function tokenMatches(presented: string | undefined, token: string): boolean {
  if (!presented) return false;
  const a = Buffer.from(presented);
  const b = Buffer.from(token);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

/** The token from `Authorization: Bearer <token>`, if the header has that form. */
export function bearerOf(header: string | undefined | null): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m?.[1];
}

/** The token from a WebSocket subprotocol list (`clove, bearer.<token>`): browsers cannot set headers. */
export function subprotocolToken(header: string | undefined | null): string | undefined {
  for (const p of (header ?? '').split(',')) {
    const t = p.trim();
    if (t.startsWith('bearer.')) return t.slice('bearer.'.length);
  }
  return undefined;
}
