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

/** The real path of `p` (realpath(3), cheaper than the JS fs.realpathSync), else `p` normalized. */
function realOr(p: string): string {
  try {
    return fs.realpathSync.native(p);
  } catch {
    return path.normalize(p);
  }
}

/** Whether `p` is `dir` or below it. */
function isWithin(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir === '/' ? '/' : dir + '/');
}

/**
 * What the agent's mount namespace must mask and re-expose so that it can reach `needed` directories:
 * with a private /tmp every needed directory below /tmp is kept, and likewise below each of
 * `privateDirs` (e.g. /run for an agent without network, see runtimeDirs()); a needed directory below an
 * ancestor the agent's uid cannot search (e.g. /root, mode 0700) gets that ancestor masked by an empty
 * tmpfs and itself bound back in. Nothing else of a masked directory becomes visible. A needed directory
 * reached through a symlink into a private directory (/var/run/x with /var/run -> /run) is kept at its
 * real path.
 */
export function exposure(
  needed: string[],
  uid: number,
  gid: number,
  privateTmp: boolean,
  privateDirs: string[] = [],
): { masks: string[]; keep: string[] } {
  const priv = [...(privateTmp ? ['/tmp'] : []), ...privateDirs.map((d) => path.normalize(d))];
  const below = (p: string) => priv.some((d) => p.startsWith(d + '/'));
  const masks = new Set<string>(priv);
  const keep = new Set<string>();
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
    if (blocked && !priv.includes(blocked)) {
      masks.add(blocked);
      keep.add(p);
    } else if (below(p)) {
      keep.add(p);
    } else {
      const real = realOr(p);
      if (real !== p && below(real)) keep.add(real);
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

/**
 * The host's runtime directories, where services put their Unix sockets: /run and /var/run, as real
 * paths, each once (with the usual /var/run -> /run symlink that is just /run). Masked for agents
 * without network.
 */
export function runtimeDirs(): string[] {
  const out: string[] = [];
  for (const d of ['/run', '/var/run']) {
    try {
      const real = fs.realpathSync(d);
      if (real !== '/' && fs.statSync(real).isDirectory() && !out.includes(real)) out.push(real);
    } catch {
      /* absent */
    }
  }
  return out;
}

const SO_ACCEPTCON = 0x10000;
const SOCK_DGRAM = 2;

/**
 * The distinct pathname Unix sockets in the text of /proc/net/unix that another process could reach:
 * listening stream/seqpacket sockets (flag __SO_ACCEPTCON) and bound datagram sockets (sendto). Connected
 * stream sockets are left out (an accepted connection shows its listener's path, a connect() to it
 * reaches the listener or nothing); abstract names ("@...") and relative paths too.
 */
export function parseUnixSockets(text: string): string[] {
  const out = new Set<string>();
  // Num: RefCount Protocol Flags Type St Inode[ Path]; the path is everything after the inode.
  const re =
    /^\s*[0-9A-Fa-f]+: [0-9A-Fa-f]+ [0-9A-Fa-f]+ ([0-9A-Fa-f]+) ([0-9A-Fa-f]+) [0-9A-Fa-f]+ +\d+ (\/.*)$/;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (!m) continue;
    const flags = parseInt(m[1], 16);
    const type = parseInt(m[2], 16);
    if ((flags & SO_ACCEPTCON) !== 0 || type === SOCK_DGRAM) out.add(m[3]);
  }
  return [...out];
}

/** parseUnixSockets() of this process's /proc/net/unix (its network namespace: the host's). */
export function hostUnixSockets(): string[] {
  let text: string;
  try {
    text = fs.readFileSync('/proc/net/unix', 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []; // no AF_UNIX at all
    throw err;
  }
  return parseUnixSockets(text);
}

/**
 * Which of the host's sockets `paths` (parseUnixSockets()) stay visible in an agent's mount namespace and
 * must be covered (NativeSpawnOptions.hideFiles): their real paths, when they still exist and are
 * sockets, are neither below one of `masks` (unless also below one of `visible`: kept binds, idmapped
 * dirs) nor below one of `exempt` (the directory of the kernel's agent socket).
 */
export function socketsToHide(
  paths: string[],
  o: { masks: string[]; visible: string[]; exempt: string[] },
): string[] {
  const both = (dirs: string[]) => [...new Set(dirs.flatMap((d) => [path.normalize(d), realOr(d)]))];
  const masks = both(o.masks);
  const visible = both(o.visible);
  const exempt = both(o.exempt);
  const skip = (p: string) =>
    exempt.some((d) => isWithin(p, d)) ||
    (masks.some((d) => isWithin(p, d)) && !visible.some((d) => isWithin(p, d)));
  const out = new Set<string>();
  for (const p of paths) {
    // Most of a host's sockets are below a mask by their very name (/run/...): no syscall for them. In
    // the agent's namespace nothing below a mask resolves but the directories bound back in.
    if (skip(p)) continue;
    let real: string;
    try {
      real = fs.realpathSync.native(p);
      if (!fs.lstatSync(real).isSocket()) continue;
    } catch {
      continue; // gone since it was listed, or not reachable from here
    }
    if (!skip(real)) out.add(real);
  }
  return [...out];
}
