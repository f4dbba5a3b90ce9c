/**
 * An agent's work directory `<data-dir>/work/<name>` belongs to its identity: it is kept across the
 * agent's restarts and the kernel's, handed over when the identity moves to another uid (a new agent id
 * after a kernel restart), and moved aside when the identity ends, so that the next agent of the name
 * starts with a fresh one.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Account } from '../sandbox/types.js';

/** Where ended identities' work directories are kept for operators (root-owned, 0700: agents never reach it). */
export const ENDED_DIR = '.ended';

/**
 * Moves `<work>/<name>` to `<work>/.ended/<identity>` (an empty one is just removed). Returns the new
 * path, or null when nothing was kept. Throws what the file system says (the caller logs it).
 */
export function retireWorkDir(workRoot: string, name: string, identity: string): string | null {
  const dir = path.join(workRoot, name);
  try {
    if (!fs.lstatSync(dir).isDirectory()) return null;
  } catch {
    return null;
  }
  if (fs.readdirSync(dir).length === 0) {
    fs.rmdirSync(dir); // nothing to keep
    return null;
  }
  const ended = path.join(workRoot, ENDED_DIR);
  fs.mkdirSync(ended, { recursive: true, mode: 0o700 });
  fs.chmodSync(ended, 0o700);
  const uid = process.geteuid?.() ?? 0;
  const gid = process.getegid?.() ?? 0;
  const st = fs.statSync(ended);
  if (st.uid !== uid || st.gid !== gid) fs.chownSync(ended, uid, gid);
  let to = path.join(ended, identity);
  // An identity is never issued twice, but a data dir copied around may hold one already.
  for (let n = 1; fs.existsSync(to); n++) to = path.join(ended, `${identity}.${n}`);
  fs.renameSync(dir, to);
  return to;
}

/**
 * Hands what the identity's previous uid owned in its work directory to its new uid (`from` → `to`),
 * so that an agent started again under another agent id can still write its own files. Touches only
 * entries owned by `from`, never follows a symlink (lchown), never descends into one, and leaves files
 * with several hard links alone (one could be a name for a file outside the directory). Nothing is done
 * when either side is the kernel's own uid (null), or the uids are the same.
 */
export function reownTree(
  dir: string,
  from: Account | null,
  to: Account | null,
  maxEntries = 1_000_000,
): number {
  if (!from || !to || from.uid === 0 || (from.uid === to.uid && from.gid === to.gid)) return 0;
  let changed = 0;
  let seen = 0;
  const visit = (p: string): void => {
    if (++seen > maxEntries) return;
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      return;
    }
    if (st.isDirectory()) {
      let entries: string[] = [];
      try {
        entries = fs.readdirSync(p);
      } catch {
        /* unreadable: its entries stay as they are */
      }
      for (const e of entries) visit(path.join(p, e));
    } else if (!st.isSymbolicLink() && st.nlink > 1) {
      return;
    }
    if (st.uid !== from.uid) return;
    try {
      fs.lchownSync(p, to.uid, st.gid === from.gid ? to.gid : st.gid);
      changed++;
    } catch {
      /* gone meanwhile */
    }
  };
  visit(dir);
  return changed;
}
