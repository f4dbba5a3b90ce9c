/**
 * The HTTP family's service: makes a caller's HTTP request with undici (never a shell), on the kernel's
 * event loop without blocking it. Every hop is checked against the caller's domain and method lists
 * (policy.ts); every connection against the SSRF rule at connect time: the resolver's answers are
 * filtered before the socket connects (so a DNS answer that changes between a check and the connect
 * cannot win: there is no separate check), an address literal is checked before connecting, and the
 * socket's remote address is checked again once connected. Redirects are followed here, one hop at a
 * time (undici's own redirect handling is off). Rules and limits: docs/protocol.md §5 HTTP.
 */
import dns from 'node:dns';
import { isUtf8 } from 'node:buffer';
import net from 'node:net';
import { Agent, buildConnector, request as undiciRequest } from 'undici';
import type { ArgsOf, Replies } from '../../../protocol/index.js';
import {
  InvalidRequestError,
  PermissionDeniedError,
  QuotaExceededError,
  type Caller,
} from '../../core/family.js';
import { addressRefusal, checkHeaders, checkMethod, checkUrl, parseRules, type Rule } from './policy.js';

export type HttpArgs = ArgsOf['HTTP'];
export type HttpResult = Replies['HTTP'];
type Failure = NonNullable<HttpResult['failure']>;

/** Resolves a name to every address it has (the system resolver by default: /etc/hosts, then DNS). */
export type Lookup = (hostname: string) => Promise<{ address: string; family: number }[]>;

export const DEFAULT_TIMEOUT_S = 30;
export const MAX_TIMEOUT_S = 300;
export const MAX_REQUEST_BODY = 1024 * 1024;
export const MAX_RESPONSE_BYTES = 8 * 1024 * 1024;
const CONNECT_TIMEOUT_MS = 10_000;
const MAX_RESPONSE_HEADER_BYTES = 64 * 1024;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export interface HttpOptions {
  /** The resolver (tests inject one; default: the system's, `dns.lookup` with every address). */
  lookup?: Lookup;
  /** Sent as `User-Agent` when the caller gives none. */
  userAgent?: string;
  /** Calls one non-operator caller may have in flight at once (`quota_exceeded` beyond). */
  maxPerCaller?: number;
  /** Calls in flight in the whole kernel (`quota_exceeded` beyond). */
  maxInFlight?: number;
  /** Told the bytes a call sent and received on its sockets (TLS included) once it ends. */
  onBytes?: (caller: Caller, bytes: number) => void;
}

/** A request that passed every check that needs no network: what an async call accepts. */
export interface Prepared {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body?: Buffer;
  rules: Rule[];
  allowedMethods: readonly string[];
  timeoutMs: number;
  maxBytes: number;
  maxRedirects: number;
}

/** The SSRF rule refused a connection (thrown inside undici's connect, turned into permission_denied). */
class BlockedAddress extends Error {
  readonly code = 'ECLOVEBLOCKED';
}

const systemLookup: Lookup = (hostname) => dns.promises.lookup(hostname, { all: true, verbatim: true });

/** What went wrong, from an error undici or the socket layer threw. */
function failureOf(err: unknown): Failure {
  const e = err as { code?: string; errors?: unknown[] };
  const code = e?.code ?? (Array.isArray(e?.errors) ? (e.errors[0] as { code?: string })?.code : undefined);
  if (!code) return 'protocol';
  if (['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA', 'ENODATA', 'EAI_NONAME'].includes(code))
    return 'dns';
  if (['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'].includes(code)) return 'timeout';
  if (
    [
      'ECONNREFUSED',
      'EHOSTUNREACH',
      'ENETUNREACH',
      'EADDRNOTAVAIL',
      'ETIMEDOUT',
      'UND_ERR_CONNECT_TIMEOUT',
    ].includes(code)
  )
    return 'connect';
  if (/^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH)/.test(code))
    return 'tls';
  return 'protocol';
}

function errorText(err: unknown): string {
  const e = err as { message?: string; errors?: { message?: string }[] };
  return e?.message || e?.errors?.[0]?.message || String(err);
}

/** Response headers as one string per name (repeated ones joined; `set-cookie` with newlines). */
function flatHeaders(h: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? v.join(k === 'set-cookie' ? '\n' : ', ') : v;
  }
  return out;
}

/** The body as text when it is UTF-8 (a truncated one may end inside a character), else base64. */
function encodeBody(buf: Buffer, truncated: boolean): { body: string; body_encoding: 'utf8' | 'base64' } {
  if (isUtf8(buf)) return { body: buf.toString('utf8'), body_encoding: 'utf8' };
  if (truncated)
    for (let cut = 1; cut <= 3 && cut < buf.length; cut++) {
      const head = buf.subarray(0, buf.length - cut);
      if (isUtf8(head)) return { body: head.toString('utf8'), body_encoding: 'utf8' };
    }
  return { body: buf.toString('base64'), body_encoding: 'base64' };
}

export class HttpService {
  private readonly lookup: Lookup;
  private readonly perCaller = new Map<number, number>();
  private inFlight = 0;
  private readonly closing = new AbortController();

  constructor(private readonly o: HttpOptions = {}) {
    this.lookup = o.lookup ?? systemLookup;
  }

  /**
   * Every check that needs no network (rights, URL, domain, method, headers, body, limits): what an
   * async HTTP call runs before it is accepted. Throws invalid_request or permission_denied.
   */
  prepare(caller: Caller, req: HttpArgs): Prepared {
    if (!req.url) throw new InvalidRequestError('invalid request: url required');
    const perms = caller.perms;
    if (!perms.can_http) throw new PermissionDeniedError('Permission denied: HTTP not allowed');
    const rules = parseRules(perms.network);
    const url = checkUrl(req.url, rules);
    const method = checkMethod(req.method, perms.http_methods);
    const headers = checkHeaders(req.headers);
    let body: Buffer | undefined;
    if (req.body !== undefined && method !== 'GET' && method !== 'HEAD') {
      body = Buffer.from(req.body, req.body_encoding === 'base64' ? 'base64' : 'utf8');
      if (body.length > MAX_REQUEST_BODY)
        throw new InvalidRequestError(`invalid request: body larger than ${MAX_REQUEST_BODY} bytes`);
    }
    if (!Object.keys(headers).some((h) => h === 'user-agent') && this.o.userAgent)
      headers['user-agent'] = this.o.userAgent;
    const seconds = !req.timeout || req.timeout > MAX_TIMEOUT_S ? MAX_TIMEOUT_S : req.timeout;
    return {
      url,
      method,
      headers,
      body,
      rules,
      allowedMethods: perms.http_methods,
      timeoutMs: Math.max(1, Math.round(seconds * 1000)),
      maxBytes: Math.min(req.max_response_bytes, MAX_RESPONSE_BYTES),
      maxRedirects: req.max_redirects,
    };
  }

  /**
   * Makes the request. A response (any status) is `success: true`; no usable response is `success:
   * false` with `code: upstream_failed` and a `failure`; a refusal by the rules throws (permission_denied,
   * invalid_request, quota_exceeded). `signal` (the caller's connection closing) cancels it.
   */
  async request(ctx: { caller: Caller; signal?: AbortSignal }, req: HttpArgs): Promise<HttpResult> {
    return this.perform(ctx.caller, this.prepare(ctx.caller, req), ctx.signal);
  }

  async perform(caller: Caller, p: Prepared, signal?: AbortSignal): Promise<HttpResult> {
    this.admit(caller);
    // One signal for the request: its time running out, the kernel closing, the caller going away.
    const ctl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctl.abort(new Error('timeout'));
    }, p.timeoutMs);
    const parents = [this.closing.signal, ...(signal ? [signal] : [])];
    const onAbort = () => ctl.abort(new Error('cancelled'));
    for (const s of parents) {
      if (s.aborted) onAbort();
      else s.addEventListener('abort', onAbort, { once: true });
    }
    const abort = ctl.signal;
    const sockets: net.Socket[] = [];
    const deadline = Date.now() + p.timeoutMs;
    const agent = new Agent({
      connect: this.connector(p.rules, sockets, deadline),
      headersTimeout: p.timeoutMs,
      bodyTimeout: p.timeoutMs,
      maxHeaderSize: MAX_RESPONSE_HEADER_BYTES,
      connections: 1,
      maxRedirections: 0,
    });
    let url = p.url;
    let method = p.method;
    let body = p.body;
    const headers = { ...p.headers };
    let redirects = 0;
    const fail = (failure: Failure, error: string): HttpResult => ({
      success: false,
      error,
      code: 'upstream_failed',
      failure,
      status_code: 0,
      body: '',
      final_url: url.href,
      redirects,
    });
    try {
      for (;;) {
        let res: Awaited<ReturnType<typeof undiciRequest>>;
        try {
          res = await undiciRequest(url, {
            dispatcher: agent,
            method: method as 'GET',
            headers,
            body,
            signal: abort,
          });
        } catch (err) {
          if (err instanceof BlockedAddress)
            throw new PermissionDeniedError(`Permission denied: ${url.host}: ${err.message}`);
          if (timedOut) return fail('timeout', `HTTP request timed out after ${p.timeoutMs / 1000} s`);
          if (abort.aborted) return fail('aborted', 'HTTP request cancelled');
          return fail(failureOf(err), `HTTP request to ${url.host} failed: ${errorText(err)}`);
        }
        // A body destroyed unread emits an abort error: never an uncaught exception in the kernel.
        res.body.on('error', () => {});
        const location = res.headers.location;
        if (REDIRECTS.has(res.statusCode) && typeof location === 'string' && p.maxRedirects > 0) {
          res.body.destroy();
          if (redirects >= p.maxRedirects)
            return fail(
              'redirects',
              `more than ${p.maxRedirects} redirects (last to ${location.slice(0, 200)})`,
            );
          let next: URL;
          try {
            next = new URL(location, url);
          } catch {
            return fail('protocol', `a redirect to an invalid URL: ${location.slice(0, 200)}`);
          }
          // Every hop is checked as the first was: scheme, domain, method (and, at connect, address).
          try {
            next = checkUrl(next.href, p.rules, 'redirect target');
            if (res.statusCode === 303 ? method !== 'HEAD' : res.statusCode <= 302 && method === 'POST') {
              method = 'GET';
              body = undefined;
              for (const h of ['content-type', 'content-encoding', 'content-language', 'content-location'])
                delete headers[h];
            }
            method = checkMethod(method, p.allowedMethods);
          } catch (e) {
            if (e instanceof PermissionDeniedError)
              throw new PermissionDeniedError(
                `${e.message} (redirect ${redirects + 1} from ${url.host} to ${next.href.slice(0, 200)})`,
              );
            throw e;
          }
          if (next.origin !== url.origin) {
            delete headers.authorization;
            delete headers.cookie;
          }
          url = next;
          redirects++;
          continue;
        }
        // The final response: read its body up to the limit.
        const chunks: Buffer[] = [];
        let size = 0;
        let truncated = false;
        try {
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            const room = p.maxBytes - size;
            if (chunk.length > room) {
              if (room > 0) chunks.push(chunk.subarray(0, room));
              size += Math.max(0, room);
              truncated = true;
              break;
            }
            chunks.push(chunk);
            size += chunk.length;
          }
        } catch (err) {
          if (timedOut)
            return fail('timeout', `HTTP request timed out after ${p.timeoutMs / 1000} s (reading the body)`);
          if (abort.aborted) return fail('aborted', 'HTTP request cancelled');
          return fail(failureOf(err), `HTTP response from ${url.host} failed: ${errorText(err)}`);
        } finally {
          if (truncated) res.body.destroy();
        }
        const status = res.statusCode;
        return {
          success: true,
          status_code: status,
          ok: status >= 200 && status < 300,
          headers: flatHeaders(res.headers),
          ...encodeBody(Buffer.concat(chunks, size), truncated),
          truncated,
          final_url: url.href,
          redirects,
        };
      }
    } finally {
      clearTimeout(timer);
      for (const s of parents) s.removeEventListener('abort', onAbort);
      await agent.destroy().catch(() => {});
      this.release(caller);
      const bytes = sockets.reduce((n, s) => n + s.bytesRead + s.bytesWritten, 0);
      if (bytes) this.o.onBytes?.(caller, bytes);
    }
  }

  /**
   * undici's connector with the SSRF rule: an address literal is checked before connecting, a name's
   * addresses are filtered as they are resolved (net.connect connects only to what the lookup returns),
   * and the connected socket's remote address is checked once more.
   */
  private connector(rules: Rule[], sockets: net.Socket[], deadline: number) {
    return (opts: buildConnector.Options, cb: buildConnector.Callback): void => {
      const port = Number(opts.port) || (opts.protocol === 'https:' ? 443 : 80);
      if (net.isIP(opts.hostname)) {
        const why = addressRefusal(rules, opts.hostname, port);
        if (why) return cb(new BlockedAddress(why), null);
      }
      const lookup = (
        hostname: string,
        options: dns.LookupOptions,
        done: (err: Error | null, address: string | dns.LookupAddress[], family?: number) => void,
      ): void => {
        this.lookup(hostname).then(
          (found) => {
            const wanted = found.filter((a) => !options.family || a.family === options.family);
            const refusals: string[] = [];
            const ok = wanted.filter((a) => {
              const why = addressRefusal(rules, a.address, port);
              if (why) refusals.push(why);
              return !why;
            });
            if (!ok.length) {
              if (refusals.length) return done(new BlockedAddress(refusals[0]), '');
              const e = Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' });
              return done(e, '');
            }
            if (options.all) done(null, ok);
            else done(null, ok[0].address, ok[0].family);
          },
          (err: Error) => done(err, ''),
        );
      };
      const connect = buildConnector({
        timeout: Math.max(1, Math.min(CONNECT_TIMEOUT_MS, deadline - Date.now())),
        maxCachedSessions: 0,
        lookup: lookup as net.LookupFunction,
      });
      connect(opts, (...args) => {
        const [err, socket] = args;
        if (err) return cb(err, null);
        sockets.push(socket);
        const why = addressRefusal(rules, socket.remoteAddress ?? '', socket.remotePort ?? port);
        if (why) {
          socket.destroy();
          return cb(new BlockedAddress(why), null);
        }
        cb(null, socket);
      });
    };
  }

  private admit(caller: Caller): void {
    const limit = this.o.maxInFlight ?? 16;
    if (this.inFlight >= limit)
      throw new QuotaExceededError('too many HTTP requests in flight in the kernel; try again', {
        budget: 'kernel_http_in_flight',
        used: this.inFlight,
        limit,
      });
    if (caller.role !== 'operator') {
      const mine = this.perCaller.get(caller.id) ?? 0;
      const per = this.o.maxPerCaller ?? 4;
      if (mine >= per)
        throw new QuotaExceededError(`too many HTTP requests in flight (at most ${per} at once)`, {
          budget: 'http_in_flight',
          used: mine,
          limit: per,
        });
      this.perCaller.set(caller.id, mine + 1);
    }
    this.inFlight++;
  }

  private release(caller: Caller): void {
    this.inFlight--;
    if (caller.role === 'operator') return;
    const left = (this.perCaller.get(caller.id) ?? 1) - 1;
    if (left > 0) this.perCaller.set(caller.id, left);
    else this.perCaller.delete(caller.id);
  }

  /** Cancels every request in flight (kernel shutdown). */
  close(): void {
    this.closing.abort(new Error('kernel closing'));
  }
}
