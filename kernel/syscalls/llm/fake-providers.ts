/**
 * Fake LLM providers for the llm family's tests: local HTTP servers that speak the OpenAI chat
 * completions, Anthropic Messages and Gemini generateContent APIs, streamed (SSE) and not, with usage
 * figures. What they do is steered by the last user turn:
 *
 * - `sleep:<ms>` anywhere: answer after that long;
 * - `status:<code>`: fail with that HTTP status (the error body quotes the key it was given);
 * - `malformed`: a 200 whose body (or stream event) is not JSON;
 * - `hang`: never answer;
 * - `tool`: call the tool `get_weather` with `{"city": "Paris"}` (streamed: its arguments in pieces);
 * - `two tools`: call `get_weather` and `get_time`, both with `{"city": "Paris"}`;
 * - `long`: an answer of ~64 KiB in 1 KiB pieces;
 * - `drip`: 200 pieces `tick ` 20 ms apart (streamed), for a call to be cancelled while it answers;
 * - `midfail`: streamed, two pieces and then the API's error event (a failure in the middle of an answer);
 * - anything else: the answer `echo:<prompt>`, in three pieces when streamed.
 *
 * A request whose last turn carries tool results (OpenAI `tool` messages, Anthropic `tool_result`
 * blocks, Gemini `functionResponse` parts) is answered from them: `tool said: <r1> | <r2>`, each result
 * as `<id or name>=<content>`.
 *
 * Usage figures are fixed per kind (USAGE) so that tests can check the exact counts.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type FakeKind = 'openai' | 'anthropic' | 'gemini';

/** The usage each fake reports, and the counts the kernel should derive from it. */
export const USAGE = {
  openai: { input: 11, output: 7, total: 18 },
  anthropic: { input: 15, output: 9, total: 24 }, // 13 input + 2 cache reads
  gemini: { input: 17, output: 8, total: 25 }, // 5 candidates + 3 thoughts
} as const;

export interface SeenRequest {
  kind: FakeKind;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
  prompt: string;
  stream: boolean;
  at: number;
  /** When the answer was complete (undefined: not yet, or never). */
  doneAt?: number;
  /** The kernel hung up before the answer was complete. */
  aborted: boolean;
}

/** The text of the last user turn, whatever the API's shape. */
function lastPrompt(kind: FakeKind, body: Record<string, unknown>): string {
  const textOf = (c: unknown): string =>
    typeof c === 'string'
      ? c
      : Array.isArray(c)
        ? c.map((p: Record<string, unknown>) => (typeof p.text === 'string' ? p.text : '')).join('')
        : '';
  if (kind === 'gemini') {
    const contents = (body.contents ?? []) as { role: string; parts: { text?: string }[] }[];
    const last = [...contents].reverse().find((c) => c.role === 'user');
    return textOf(last?.parts ?? []);
  }
  const messages = (body.messages ?? []) as { role: string; content: unknown }[];
  const last = [...messages].reverse().find((m) => m.role === 'user');
  return textOf(last?.content);
}

/** The tool results of the request's last turn(s), as `<id or name>=<content>` (none: not a tool-result turn). */
export function toolResults(kind: FakeKind, body: Record<string, unknown>): string[] {
  if (kind === 'openai') {
    const messages = (body.messages ?? []) as { role: string; content: unknown; tool_call_id?: string }[];
    const out: string[] = [];
    for (let i = messages.length - 1; i >= 0 && messages[i].role === 'tool'; i--)
      out.unshift(`${messages[i].tool_call_id}=${String(messages[i].content)}`);
    return out;
  }
  if (kind === 'anthropic') {
    const messages = (body.messages ?? []) as { role: string; content: unknown }[];
    const last = messages[messages.length - 1];
    if (last?.role !== 'user' || !Array.isArray(last.content)) return [];
    return (last.content as Record<string, unknown>[])
      .filter((b) => b.type === 'tool_result')
      .map((b) => `${String(b.tool_use_id)}=${String(b.content)}`);
  }
  const contents = (body.contents ?? []) as { role: string; parts: Record<string, unknown>[] }[];
  const last = contents[contents.length - 1];
  if (last?.role !== 'user') return [];
  return last.parts
    .filter((p) => p.functionResponse)
    .map((p) => {
      const f = p.functionResponse as { name: string; response: unknown };
      return `${f.name}=${JSON.stringify(f.response)}`;
    });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The calls a prompt asks for: `two tools` two, `tool` one. */
function callsFor(prompt: string): { id: string; name: string; args: Record<string, unknown> }[] {
  const weather = { id: 'call_1', name: 'get_weather', args: { city: 'Paris' } };
  if (prompt.includes('two tools'))
    return [weather, { id: 'call_2', name: 'get_time', args: { city: 'Paris' } }];
  return prompt.includes('tool') ? [weather] : [];
}

export class FakeProvider {
  readonly seen: SeenRequest[] = [];
  private server?: http.Server;
  private readonly sockets = new Set<import('node:net').Socket>();

  constructor(readonly kind: FakeKind) {}

  async start(): Promise<string> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    const port = (this.server.address() as AddressInfo).port;
    return this.kind === 'openai'
      ? `http://127.0.0.1:${port}/v1`
      : this.kind === 'gemini'
        ? `http://127.0.0.1:${port}/v1beta`
        : `http://127.0.0.1:${port}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server?.close(r));
  }

  /** Requests whose prompt contains `marker`. */
  matching(marker: string): SeenRequest[] {
    return this.seen.filter((r) => r.prompt.includes(marker));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>;
    const url = req.url ?? '';
    const stream = this.kind === 'gemini' ? url.includes(':streamGenerateContent') : body.stream === true;
    const prompt = lastPrompt(this.kind, body);
    const seen: SeenRequest = {
      kind: this.kind,
      path: url,
      headers: req.headers,
      body,
      prompt,
      stream,
      at: Date.now(),
      aborted: false,
    };
    this.seen.push(seen);
    res.on('close', () => {
      if (!res.writableFinished) seen.aborted = true;
    });
    const delay = /sleep:(\d+)/.exec(prompt);
    if (delay) await sleep(Number(delay[1]));
    if (prompt.includes('hang')) return;
    const status = /status:(\d+)/.exec(prompt);
    if (status) {
      const key =
        req.headers.authorization?.replace('Bearer ', '') ??
        req.headers['x-api-key'] ??
        req.headers['x-goog-api-key'] ??
        '';
      res.writeHead(Number(status[1]), { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `upstream exploded (key was ${String(key)})` } }));
      return;
    }
    if (prompt.includes('malformed')) {
      if (stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end('data: {"this is": not json\n\n');
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"choices": [oops');
      }
      return;
    }
    const results = toolResults(this.kind, body);
    const pieces = results.length
      ? ['tool said: ', results.join(' | ')]
      : prompt.includes('long')
        ? Array.from({ length: 64 }, () => 'x'.repeat(1024))
        : prompt.includes('drip')
          ? Array.from({ length: 200 }, () => 'tick ')
          : prompt.includes('midfail')
            ? ['half ', 'an answer']
            : [
                'echo:',
                prompt.slice(0, Math.ceil(prompt.length / 2)),
                prompt.slice(Math.ceil(prompt.length / 2)),
              ];
    const calls = results.length ? [] : callsFor(prompt);
    if (stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const gap = prompt.includes('drip') ? 20 : 1;
      for (const ev of this.events(pieces, calls, prompt.includes('midfail'))) {
        if (res.destroyed) return;
        res.write(ev);
        await sleep(gap);
      }
      res.end();
    } else {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(this.whole(pieces.join(''), calls)));
    }
    seen.doneAt = Date.now();
  }

  /** The streamed answer, as SSE frames; `fail`: the API's error event after the text. */
  private *events(pieces: string[], calls: ReturnType<typeof callsFor>, fail = false): Generator<string> {
    const u = USAGE;
    const tool = calls.length > 0;
    if (this.kind === 'openai') {
      const chunk = (o: Record<string, unknown>) =>
        `data: ${JSON.stringify({ model: 'fake-gpt', ...o })}\n\n`;
      for (const p of pieces) yield chunk({ choices: [{ index: 0, delta: { content: p } }] });
      if (fail) {
        yield `data: ${JSON.stringify({ error: { message: 'overloaded mid-stream' } })}\n\n`;
        return;
      }
      // Each call's arguments in two pieces, the first with its id and name (as OpenAI streams them).
      for (const [index, c] of calls.entries()) {
        const args = JSON.stringify(c.args);
        yield chunk({
          choices: [
            {
              index: 0,
              delta: {
                tool_calls: [
                  {
                    index,
                    id: c.id,
                    type: 'function',
                    function: { name: c.name, arguments: args.slice(0, 4) },
                  },
                ],
              },
            },
          ],
        });
        yield chunk({
          choices: [{ index: 0, delta: { tool_calls: [{ index, function: { arguments: args.slice(4) } }] } }],
        });
      }
      yield chunk({ choices: [{ index: 0, delta: {}, finish_reason: tool ? 'tool_calls' : 'stop' }] });
      yield chunk({
        choices: [],
        usage: {
          prompt_tokens: u.openai.input,
          completion_tokens: u.openai.output,
          total_tokens: u.openai.total,
        },
      });
      yield 'data: [DONE]\n\n';
    } else if (this.kind === 'anthropic') {
      const ev = (type: string, o: Record<string, unknown>) =>
        `event: ${type}\ndata: ${JSON.stringify({ type, ...o })}\n\n`;
      yield ev('message_start', {
        message: {
          id: 'msg_1',
          model: 'fake-claude',
          usage: { input_tokens: 13, cache_read_input_tokens: 2, output_tokens: 1 },
        },
      });
      yield ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
      yield ': a comment line\n\n';
      yield ev('ping', {});
      for (const p of pieces)
        yield ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: p } });
      if (fail) {
        yield ev('error', { error: { type: 'overloaded_error', message: 'overloaded mid-stream' } });
        return;
      }
      yield ev('content_block_stop', { index: 0 });
      for (const [k, c] of calls.entries()) {
        const index = k + 1;
        const args = JSON.stringify(c.args);
        yield ev('content_block_start', {
          index,
          content_block: { type: 'tool_use', id: `toolu_${index}`, name: c.name, input: {} },
        });
        yield ev('content_block_delta', {
          index,
          delta: { type: 'input_json_delta', partial_json: args.slice(0, 8) },
        });
        yield ev('content_block_delta', {
          index,
          delta: { type: 'input_json_delta', partial_json: args.slice(8) },
        });
        yield ev('content_block_stop', { index });
      }
      yield ev('message_delta', {
        delta: { stop_reason: tool ? 'tool_use' : 'end_turn' },
        usage: { output_tokens: u.anthropic.output },
      });
      yield ev('message_stop', {});
    } else {
      // Gemini streams whole GenerateContentResponse chunks; CRLF line ends, as some servers send.
      const chunk = (o: Record<string, unknown>) =>
        `data: ${JSON.stringify({ modelVersion: 'fake-gemini', ...o })}\r\n\r\n`;
      yield chunk({
        candidates: [{ content: { role: 'model', parts: [{ text: 'pondering', thought: true }] } }],
      });
      for (const p of pieces)
        yield chunk({
          candidates: [{ content: { role: 'model', parts: [{ text: p }] } }],
          usageMetadata: { promptTokenCount: u.gemini.input },
        });
      if (fail) {
        yield `data: ${JSON.stringify({ error: { code: 503, message: 'overloaded mid-stream' } })}\r\n\r\n`;
        return;
      }
      // Gemini sends each call whole, without an id (the kernel gives it one).
      yield chunk({
        candidates: [
          {
            content: {
              role: 'model',
              parts: calls.map((c) => ({ functionCall: { name: c.name, args: c.args } })),
            },
            finishReason: 'STOP',
          },
        ],
        usageMetadata: {
          promptTokenCount: u.gemini.input,
          candidatesTokenCount: 5,
          thoughtsTokenCount: 3,
          totalTokenCount: u.gemini.total,
        },
      });
    }
  }

  /** The answer in one body (stream: false). */
  private whole(content: string, calls: ReturnType<typeof callsFor>): Record<string, unknown> {
    const u = USAGE;
    const tool = calls.length > 0;
    if (this.kind === 'openai')
      return {
        model: 'fake-gpt',
        choices: [
          {
            index: 0,
            message: {
              role: 'assistant',
              content,
              ...(tool
                ? {
                    tool_calls: calls.map((c) => ({
                      id: c.id,
                      type: 'function',
                      function: { name: c.name, arguments: JSON.stringify(c.args) },
                    })),
                  }
                : {}),
            },
            finish_reason: tool ? 'tool_calls' : 'stop',
          },
        ],
        usage: {
          prompt_tokens: u.openai.input,
          completion_tokens: u.openai.output,
          total_tokens: u.openai.total,
        },
      };
    if (this.kind === 'anthropic')
      return {
        type: 'message',
        model: 'fake-claude',
        content: [
          { type: 'text', text: content },
          ...calls.map((c, k) => ({ type: 'tool_use', id: `toolu_${k + 1}`, name: c.name, input: c.args })),
        ],
        stop_reason: tool ? 'tool_use' : 'end_turn',
        usage: { input_tokens: 13, cache_read_input_tokens: 2, output_tokens: u.anthropic.output },
      };
    return {
      modelVersion: 'fake-gemini',
      candidates: [
        {
          content: {
            role: 'model',
            parts: [
              { text: 'pondering', thought: true },
              { text: content },
              ...calls.map((c) => ({ functionCall: { name: c.name, args: c.args } })),
            ],
          },
          finishReason: 'STOP',
        },
      ],
      usageMetadata: {
        promptTokenCount: u.gemini.input,
        candidatesTokenCount: 5,
        thoughtsTokenCount: 3,
        totalTokenCount: u.gemini.total,
      },
    };
  }
}
