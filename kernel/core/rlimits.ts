/** This process's RLIMIT_NOFILE, as /proc reports it (Node has no getrlimit). */
import fs from 'node:fs';

/** The soft or hard "Max open files" of this process (Infinity when unlimited or unreadable). */
export function nofileLimit(which: 'soft' | 'hard'): number {
  try {
    const line = /^Max open files\s+(\S+)\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    const n = Number(line?.[which === 'soft' ? 1 : 2]);
    return Number.isFinite(n) && n > 0 ? n : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}
