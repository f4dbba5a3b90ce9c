/**
 * The HTTP family's rules (docs/protocol.md §5 HTTP), without any network: which URLs, hosts, methods
 * and request headers a caller may use, and which connected addresses its `network` list exempts from
 * the SSRF rule. The URL is parsed by the WHATWG parser (the one every browser uses), so the host
 * checked is the host connected to: `evil.com?.allowed.com`, `allowed.com.evil.com`,
 * `allowed.com@evil.com` all have the host they look like to a browser, IDN names are compared in
 * their punycode form, and every numeric form of an IPv4 address (`127.1`, `2130706433`, `0x7f000001`)
 * is its dotted quad.
 */
import { InvalidRequestError, PermissionDeniedError } from '../../core/family.js';
import { classify, inCidr, ipText, parseCidr, parseIp, embeddedV4, type Cidr, type Ip } from './addresses.js';

export const MAX_URL_LENGTH = 8192;
export const MAX_HEADERS = 100;
export const MAX_HEADER_BYTES = 32 * 1024;
const MAX_METHOD_LENGTH = 32;

/** One entry of a `network` list, parsed. An entry that does not parse matches nothing. */
export type Rule =
  | { kind: 'any' }
  | { kind: 'host'; host: string; port?: number }
  | { kind: 'suffix'; suffix: string; port?: number }
  | { kind: 'ip'; ip: Ip; port?: number }
  | { kind: 'cidr'; cidr: Cidr };

/** A host as it is matched: a lower-case ASCII name without a trailing dot, or an address. */
export type Host = { name: string; ip?: undefined } | { name?: undefined; ip: Ip };

/** The host of a parsed URL (`URL.hostname` is already IDNA-mapped, lower-cased and IPv4-normalised). */
export function hostOf(url: URL): Host {
  const h = url.hostname;
  const ip = parseIp(h);
  if (ip) return { ip };
  return { name: h.replace(/\.+$/, '') };
}

export function hostText(h: Host): string {
  if (h.ip) return h.ip.v === 6 ? `[${ipText(h.ip)}]` : ipText(h.ip);
  return h.name;
}

/** The port a URL connects to. */
export function portOf(url: URL): number {
  if (url.port) return Number(url.port);
  return url.protocol === 'https:' ? 443 : 80;
}

/** A host written in a rule, normalised as the URL parser would (IDNA, IPv4 forms, case, trailing dot). */
function normaliseRuleHost(text: string): Host | undefined {
  if (!text || /[/?#@\s\\]/.test(text)) return undefined;
  let hostname: string;
  try {
    hostname = new URL(`http://${text}/`).hostname;
  } catch {
    return undefined;
  }
  const ip = parseIp(hostname);
  if (ip) return { ip };
  const name = hostname.replace(/\.+$/, '');
  return name ? { name } : undefined;
}

export function parseRule(entry: string): Rule | undefined {
  const e = entry.trim().toLowerCase();
  if (e === '*') return { kind: 'any' };
  if (e.includes('/')) {
    const cidr = parseCidr(e);
    return cidr ? { kind: 'cidr', cidr } : undefined;
  }
  // A bare IPv6 address has colons of its own; with a port it is written `[v6]:port`.
  const bare = parseIp(e);
  if (bare) return { kind: 'ip', ip: bare };
  let hostPart = e;
  let port: number | undefined;
  const m = /^(.*):(\d{1,5})$/.exec(e);
  if (m) {
    port = Number(m[2]);
    if (port < 1 || port > 65535) return undefined;
    hostPart = m[1];
  }
  if (hostPart.startsWith('*.')) {
    const suffix = normaliseRuleHost(hostPart.slice(2));
    // `*.` rules name domains: they never match an address.
    return suffix?.name ? { kind: 'suffix', suffix: suffix.name, port } : undefined;
  }
  const h = normaliseRuleHost(hostPart);
  if (!h) return undefined;
  return h.ip ? { kind: 'ip', ip: h.ip, port } : { kind: 'host', host: h.name, port };
}

export function parseRules(list: readonly string[]): Rule[] {
  return list.map(parseRule).filter((r): r is Rule => r !== undefined);
}

const samePort = (rulePort: number | undefined, port: number) => rulePort === undefined || rulePort === port;

/**
 * The domain allow-list: `*` any host; `name` exactly that name; `*.domain` names below `domain` (not
 * `domain` itself); an address or a CIDR only addresses it names. A port in a rule restricts it.
 */
export function hostAllowed(rules: readonly Rule[], host: Host, port: number): boolean {
  return rules.some((r) => {
    switch (r.kind) {
      case 'any':
        return true;
      case 'host':
        return host.name === r.host && samePort(r.port, port);
      case 'suffix':
        return host.name !== undefined && host.name.endsWith(`.${r.suffix}`) && samePort(r.port, port);
      case 'ip':
        return host.ip !== undefined && ipText(host.ip) === ipText(r.ip) && samePort(r.port, port);
      case 'cidr':
        return host.ip !== undefined && inCidr(host.ip, r.cidr);
    }
  });
}

/**
 * The SSRF rule: may the kernel connect to `address`:`port` for a caller with these rules? An ordinary
 * address always; a special one only when a rule names it: the address itself (or the IPv4 address an
 * IPv6 form carries), or — except for cloud-metadata addresses — a CIDR holding it. `*` names nothing.
 * Returns why not, or undefined when allowed.
 */
export function addressRefusal(rules: readonly Rule[], address: string, port: number): string | undefined {
  const ip = parseIp(address);
  if (!ip) return `address ${address} is not an IP address`;
  const special = classify(ip);
  if (!special) return undefined;
  const forms = [ip];
  const inner = embeddedV4(ip);
  if (inner) forms.push(inner.v4);
  const named = rules.some((r) => {
    if (r.kind === 'ip')
      return samePort(r.port, port) && forms.some((f) => ipText(f) === ipText(r.ip) && f.v === r.ip.v);
    if (r.kind === 'cidr') return special !== 'metadata' && forms.some((f) => inCidr(f, r.cidr));
    return false;
  });
  if (named) return undefined;
  const what = special === 'metadata' ? 'a cloud metadata address' : `a ${special} address`;
  return `${ipText(ip)} is ${what} and the network list does not name it`;
}

/** Parses and checks a URL: an http(s) URL the caller's domain list allows. */
export function checkUrl(raw: string, rules: readonly Rule[], what = 'domain'): URL {
  if (raw.length > MAX_URL_LENGTH)
    throw new InvalidRequestError(`invalid request: url longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InvalidRequestError(`invalid request: not a valid URL: ${raw.slice(0, 200)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new PermissionDeniedError(
      `Permission denied: only http and https URLs are allowed (${url.protocol.slice(0, -1)})`,
    );
  const host = hostOf(url);
  if (!host.ip && !host.name) throw new InvalidRequestError('invalid request: the URL has no host');
  if (!hostAllowed(rules, host, portOf(url)))
    throw new PermissionDeniedError(`Permission denied: ${what} not in whitelist: ${hostText(host)}`);
  if (url.username || url.password)
    throw new InvalidRequestError(
      'invalid request: credentials in the URL are not supported (send an Authorization header)',
    );
  url.hash = '';
  return url;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The method, upper-cased, if it is an HTTP token the caller's `http_methods` allow. */
export function checkMethod(method: string, allowed: readonly string[]): string {
  if (!TOKEN.test(method) || method.length > MAX_METHOD_LENGTH)
    throw new InvalidRequestError(
      `invalid request: not an HTTP method: ${JSON.stringify(method.slice(0, 64))}`,
    );
  const m = method.toUpperCase();
  if (!allowed.some((a) => a === '*' || a.toUpperCase() === m))
    throw new PermissionDeniedError(`Permission denied: HTTP method not allowed: ${m}`);
  return m;
}

/** Request headers the kernel sets itself or that could smuggle a second request: refused. */
const REFUSED = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'http2-settings',
]);

/** Checks request headers: tokens for names, no CR/LF/NUL in values, none of the refused ones, bounded. */
export function checkHeaders(headers: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!headers) return out;
  const entries = Object.entries(headers);
  if (entries.length > MAX_HEADERS)
    throw new InvalidRequestError(`invalid request: more than ${MAX_HEADERS} headers`);
  let size = 0;
  for (const [name, value] of entries) {
    if (!TOKEN.test(name))
      throw new InvalidRequestError(
        `invalid request: not a header name: ${JSON.stringify(name.slice(0, 64))}`,
      );
    const lower = name.toLowerCase();
    if (REFUSED.has(lower) || lower.startsWith('proxy-'))
      throw new InvalidRequestError(
        `invalid request: header ${name} is set by the kernel and may not be sent`,
      );
    // Field values (RFC 9110 §5.5): visible characters, spaces, tabs and obs-text; no CR, LF or NUL.
    if (/[^\t\x20-\x7e\x80-\xff]/.test(value))
      throw new InvalidRequestError(
        `invalid request: header ${name} has a character not allowed in a header value`,
      );
    size += Buffer.byteLength(name) + Buffer.byteLength(value) + 4;
    if (size > MAX_HEADER_BYTES)
      throw new InvalidRequestError(`invalid request: headers larger than ${MAX_HEADER_BYTES} bytes`);
    out[lower] = value;
  }
  return out;
}
