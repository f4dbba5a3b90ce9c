/**
 * IP addresses for the HTTP family's SSRF rule (docs/protocol.md §5 HTTP): which addresses are special
 * (loopback, private, link-local, CGNAT, unspecified, multicast, reserved, cloud metadata) and CIDR
 * matching. An IPv6 address that carries an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible,
 * SIIT, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged by that IPv4 address too.
 */
import net from 'node:net';

export type Special =
  'loopback' | 'private' | 'link-local' | 'cgnat' | 'unspecified' | 'multicast' | 'reserved' | 'metadata';

/** An address as numbers: 4 bytes (IPv4) or 8 16-bit groups (IPv6). */
export interface Ip {
  v: 4 | 6;
  parts: number[];
}

/** Parses a literal IPv4 (dotted quad only) or IPv6 address (brackets and a zone id allowed). */
export function parseIp(text: string): Ip | undefined {
  let s = text.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (net.isIPv4(s)) return { v: 4, parts: s.split('.').map(Number) };
  if (!net.isIPv6(s)) return undefined;
  // A dotted IPv4 tail (`::ffff:127.0.0.1`) becomes its two groups (`::ffff:7f00:1`).
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.')) {
    const q = s
      .slice(lastColon + 1)
      .split('.')
      .map(Number);
    s = `${s.slice(0, lastColon + 1)}${((q[0] << 8) | q[1]).toString(16)}:${((q[2] << 8) | q[3]).toString(16)}`;
  }
  const group = (x: string): number[] => (x === '' ? [] : x.split(':').map((h) => parseInt(h, 16)));
  const dbl = s.indexOf('::');
  let groups: number[];
  if (dbl >= 0) {
    const head = group(s.slice(0, dbl));
    const rest = group(s.slice(dbl + 2));
    groups = [...head, ...Array<number>(Math.max(0, 8 - head.length - rest.length)).fill(0), ...rest];
  } else groups = group(s);
  if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff))
    return undefined;
  return { v: 6, parts: groups };
}

/** The canonical text of an address (IPv6 compressed, lower case, no brackets). */
export function ipText(ip: Ip): string {
  if (ip.v === 4) return ip.parts.join('.');
  const g = ip.parts;
  // The longest run of two or more zero groups becomes `::`.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** The address as a list of bits (big-endian). */
function bits(ip: Ip): number[] {
  const width = ip.v === 4 ? 8 : 16;
  const out: number[] = [];
  for (const p of ip.parts) for (let b = width - 1; b >= 0; b--) out.push((p >> b) & 1);
  return out;
}

export interface Cidr {
  ip: Ip;
  prefix: number;
}

/** Parses `a.b.c.d/n` or `v6/n` (or a bare address: a /32 or /128). */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (!ip) return undefined;
  const max = ip.v === 4 ? 32 : 128;
  if (slash < 0) return { ip, prefix: max };
  const n = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(n) || Number(n) > max) return undefined;
  return { ip, prefix: Number(n) };
}

export function inCidr(ip: Ip, c: Cidr): boolean {
  if (ip.v !== c.ip.v) return false;
  const a = bits(ip);
  const b = bits(c.ip);
  for (let i = 0; i < c.prefix; i++) if (a[i] !== b[i]) return false;
  return true;
}

const table = (rows: [string, Special][]): [Cidr, Special][] => rows.map(([c, s]) => [parseCidr(c)!, s]);

// First match wins: the metadata addresses come before the ranges that hold them.
const V4 = table([
  ['169.254.169.254/32', 'metadata'], // AWS, GCP, Azure, OpenStack, …
  ['100.100.100.200/32', 'metadata'], // Alibaba Cloud
  ['0.0.0.0/8', 'unspecified'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'cgnat'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'],
  ['192.0.2.0/24', 'reserved'],
  ['192.88.99.0/24', 'reserved'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'reserved'],
  ['198.51.100.0/24', 'reserved'],
  ['203.0.113.0/24', 'reserved'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'], // with 255.255.255.255
]);
const V6 = table([
  ['fd00:ec2::254/128', 'metadata'], // AWS over IPv6
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['100::/64', 'reserved'],
  ['2001::/32', 'reserved'], // Teredo
  ['2001:db8::/32', 'reserved'],
  ['64:ff9b:1::/48', 'private'],
  ['fc00::/7', 'private'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'link-local'],
  ['ff00::/8', 'multicast'],
]);

/**
 * The IPv4 address an IPv6 one carries, if any: `translated` for forms that reach that IPv4 address
 * (mapped, NAT64, 6to4), `legacy` for deprecated ones (IPv4-compatible, SIIT).
 */
export function embeddedV4(ip: Ip): { v4: Ip; kind: 'translated' | 'legacy' } | undefined {
  if (ip.v !== 6) return undefined;
  const g = ip.parts;
  const v4 = (hi: number, lo: number): Ip => ({ v: 4, parts: [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff] });
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zeros(0, 5) && g[5] === 0xffff) return { v4: v4(g[6], g[7]), kind: 'translated' }; // ::ffff:a.b.c.d
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return { v4: v4(g[6], g[7]), kind: 'translated' }; // NAT64
  if (g[0] === 0x2002) return { v4: v4(g[1], g[2]), kind: 'translated' }; // 6to4
  if (zeros(0, 4) && g[4] === 0xffff && g[5] === 0) return { v4: v4(g[6], g[7]), kind: 'legacy' }; // SIIT
  if (zeros(0, 6) && (g[6] !== 0 || g[7] > 1)) return { v4: v4(g[6], g[7]), kind: 'legacy' }; // ::a.b.c.d
  return undefined;
}

/** What is special about an address, or undefined for an ordinary (public) one. */
export function classify(ip: Ip): Special | undefined {
  const inner = embeddedV4(ip);
  if (inner) return classify(inner.v4) ?? (inner.kind === 'legacy' ? 'reserved' : undefined);
  for (const [c, s] of ip.v === 4 ? V4 : V6) if (inCidr(ip, c)) return s;
  return undefined;
}
