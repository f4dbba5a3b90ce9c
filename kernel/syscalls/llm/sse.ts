/**
 * Reading a provider's HTTP body without holding more than a bounded amount of it: server-sent events
 * one at a time, or a whole (capped) body.
 */

/** The provider answered something the kernel cannot use (reason `malformed`). */
export class MalformedError extends Error {}

export interface SseEvent {
  event: string;
  data: string;
}

type Body = ReadableStream<Uint8Array>;

/** Yields the body's chunks; the reader is released when the consumer stops early. */
async function* chunks(body: Body): AsyncGenerator<Uint8Array> {
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value) yield value;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * The server-sent events of `body` (https://html.spec.whatwg.org/multipage/server-sent-events.html):
 * `event:` and `data:` fields, events ended by a blank line. An event (or a line) longer than
 * `maxEventBytes` is an error rather than a growing buffer.
 */
export async function* sseEvents(body: Body, maxEventBytes: number): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buf = '';
  let event = '';
  let data: string[] = [];
  let size = 0;
  const line = function* (l: string): Generator<SseEvent> {
    if (l === '') {
      if (data.length) yield { event: event || 'message', data: data.join('\n') };
      event = '';
      data = [];
      size = 0;
      return;
    }
    if (l.startsWith(':')) return;
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') {
      size += value.length;
      if (size > maxEventBytes) throw new MalformedError(`stream event over ${maxEventBytes} bytes`);
      data.push(value);
    } else if (field === 'event') event = value;
  };
  const drain = function* (final: boolean): Generator<SseEvent> {
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buf);
      if (!m) break;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (m[0] === '\r' && m.index === buf.length - 1 && !final) break;
      const l = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      yield* line(l);
    }
    if (buf.length > maxEventBytes) throw new MalformedError(`stream line over ${maxEventBytes} bytes`);
  };
  for await (const chunk of chunks(body)) {
    buf += decoder.decode(chunk, { stream: true });
    yield* drain(false);
  }
  buf += decoder.decode();
  yield* drain(true);
  if (buf) yield* line(buf);
  yield* line('');
}

/** The whole body as text, refusing one longer than `maxBytes`. */
export async function readCapped(body: Body | null, maxBytes: number): Promise<string> {
  if (!body) return '';
  const decoder = new TextDecoder();
  let out = '';
  let n = 0;
  for await (const chunk of chunks(body)) {
    n += chunk.length;
    if (n > maxBytes) throw new MalformedError(`reply body over ${maxBytes} bytes`);
    out += decoder.decode(chunk, { stream: true });
  }
  return out + decoder.decode();
}

/** At most `maxBytes` of the body as text (error replies: the rest is dropped). */
export async function readHead(body: Body | null, maxBytes: number): Promise<string> {
  if (!body) return '';
  const decoder = new TextDecoder();
  let out = '';
  let n = 0;
  for await (const chunk of chunks(body)) {
    out += decoder.decode(chunk.subarray(0, Math.max(0, maxBytes - n)), { stream: true });
    n += chunk.length;
    if (n >= maxBytes) break;
  }
  return out + decoder.decode();
}
