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
