/** Path checks done as the agent's uid/gid would see them (the kernel daemon itself is usually root). */
import fs from 'node:fs';
import path from 'node:path';

/** Whether uid/gid may traverse to `file` and access it with `bits` (R=4, W=2, X=1), by plain mode bits. */
export function reachableBy(file: string, uid: number, gid: number, bits: number): boolean {
  const abs = path.resolve(file);
  const parts = abs.split('/').filter(Boolean);
  let cur = '/';
  const allowed = (st: fs.Stats, want: number): boolean => {
    if (uid === 0) return true;
    const cls = st.uid === uid ? (st.mode >> 6) & 7 : st.gid === gid ? (st.mode >> 3) & 7 : st.mode & 7;
    return (cls & want) === want;
  };
  try {
    for (const p of parts) {
      if (!allowed(fs.statSync(cur), 1)) return false;
      cur = path.join(cur, p);
    }
    return allowed(fs.statSync(cur), bits);
  } catch {
    return false;
  }
}

/** Whether uid/gid may search (x) directory `dir` itself, ignoring its ancestors. */
export function searchableBy(dir: string, uid: number, gid: number): boolean {
  return modeAllows(dir, uid, gid, 1);
}

/** Whether the mode bits of `file` itself grant `bits` to uid/gid (ancestors not checked). */
export function modeAllows(file: string, uid: number, gid: number, bits: number): boolean {
  if (uid === 0) return true;
  try {
    const st = fs.statSync(file);
    const cls = st.uid === uid ? (st.mode >> 6) & 7 : st.gid === gid ? (st.mode >> 3) & 7 : st.mode & 7;
    return (cls & bits) === bits;
  } catch {
    return false;
  }
}

/**
 * What the agent's mount namespace must mask and re-expose so that it can reach `needed` directories:
 * with a private /tmp every needed directory below /tmp is kept; a needed directory below an ancestor
 * the agent's uid cannot search (e.g. /root, mode 0700) gets that ancestor masked by an empty tmpfs and
 * itself bound back in. Nothing else of the masked directory becomes visible.
 */
export function exposure(
  needed: string[],
  uid: number,
  gid: number,
  privateTmp: boolean,
): { masks: string[]; keep: string[] } {
  const masks = new Set<string>();
  const keep = new Set<string>();
  if (privateTmp) masks.add('/tmp');
  for (const raw of needed) {
    if (!path.isAbsolute(raw)) continue;
    const p = path.normalize(raw);
    try {
      if (!fs.statSync(p).isDirectory()) continue;
    } catch {
      continue;
    }
    const parts = p.split('/').filter(Boolean);
    let cur = '/';
    let blocked: string | undefined;
    for (const part of parts.slice(0, -1)) {
      cur = path.join(cur, part);
      if (!searchableBy(cur, uid, gid)) {
        blocked = cur;
        break;
      }
    }
    if (blocked && blocked !== '/tmp') {
      masks.add(blocked);
      keep.add(p);
    } else if (privateTmp && p.startsWith('/tmp/')) {
      keep.add(p);
    }
  }
  const sorted = [...keep].sort((a, b) => a.length - b.length);
  const kept: string[] = [];
  for (const p of sorted) if (!kept.some((k) => p === k || p.startsWith(k + '/'))) kept.push(p);
  const maskList = [...masks].sort((a, b) => a.length - b.length);
  return {
    masks: maskList.filter((m, i) => !maskList.slice(0, i).some((o) => m.startsWith(o + '/'))),
    keep: kept.slice(0, 32),
  };
}
