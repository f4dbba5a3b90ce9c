/**
 * Fake LLM providers for the llm family's tests: local HTTP servers that speak the OpenAI chat
 * completions, Anthropic Messages and Gemini generateContent APIs, streamed (SSE) and not, with usage
 * figures. What they do is steered by the last user turn:
 *
 * - `sleep:<ms>` anywhere: answer after that long;
 * - `status:<code>`: fail with that HTTP status (the error body quotes the key it was given);
 * - `malformed`: a 200 whose body (or stream event) is not JSON;
 * - `hang`: never answer;
 * - `tool`: call the tool `get_weather` with `{"city": "Paris"}`;
 * - `long`: an answer of ~64 KiB in 1 KiB pieces;
 * - anything else: the answer `echo:<prompt>`, in three pieces when streamed.
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
    const pieces = prompt.includes('long')
      ? Array.from({ length: 64 }, () => 'x'.repeat(1024))
      : ['echo:', prompt.slice(0, Math.ceil(prompt.length / 2)), prompt.slice(Math.ceil(prompt.length / 2))];
    const tool = prompt.includes('tool');
    if (stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      for (const ev of this.events(pieces, tool)) {
        if (res.destroyed) return;
        res.write(ev);
        await sleep(1);
      }
      res.end();
    } else {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(this.whole(pieces.join(''), tool)));
    }
    seen.doneAt = Date.now();
  }

  /** The streamed answer, as SSE frames. */
  private *events(pieces: string[], tool: boolean): Generator<string> {
    const u = USAGE;
    if (this.kind === 'openai') {
      const chunk = (o: Record<string, unknown>) =>
        `data: ${JSON.stringify({ model: 'fake-gpt', ...o })}\n\n`;
      for (const p of pieces) yield chunk({ choices: [{ index: 0, delta: { content: p } }] });
      if (tool) {
        yield chunk({
          choices: [
            {
              index: 0,
              delta: {
                tool_calls: [
                  {
                    index: 0,
                    id: 'call_1',
                    type: 'function',
                    function: { name: 'get_weather', arguments: '{"ci' },
                  },
                ],
              },
            },
          ],
        });
        yield chunk({
          choices: [
            { index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: 'ty":"Paris"}' } }] } },
          ],
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
      yield ev('content_block_stop', { index: 0 });
      if (tool) {
        yield ev('content_block_start', {
          index: 1,
          content_block: { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: {} },
        });
        yield ev('content_block_delta', {
          index: 1,
          delta: { type: 'input_json_delta', partial_json: '{"city":' },
        });
        yield ev('content_block_delta', {
          index: 1,
          delta: { type: 'input_json_delta', partial_json: '"Paris"}' },
        });
        yield ev('content_block_stop', { index: 1 });
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
      yield chunk({
        candidates: [
          {
            content: {
              role: 'model',
              parts: tool ? [{ functionCall: { name: 'get_weather', args: { city: 'Paris' } } }] : [],
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
  private whole(content: string, tool: boolean): Record<string, unknown> {
    const u = USAGE;
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
                    tool_calls: [
                      {
                        id: 'call_1',
                        type: 'function',
                        function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
                      },
                    ],
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
          ...(tool
            ? [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }]
            : []),
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
              ...(tool ? [{ functionCall: { name: 'get_weather', args: { city: 'Paris' } } }] : []),
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
