/**
 * The local listener of the HTTP API (`clove kernel --http HOST:PORT`): a node HTTP server running the
 * API's Hono app (@hono/node-server), and the stream's WebSocket (ws, on the server's `upgrade`) with
 * the same token rule. A browser cannot set headers on a WebSocket, so the token may come as the
 * subprotocol `bearer.<token>` beside `clove` (the server answers `clove`). Each client's unsent output
 * is bounded: a client that falls behind by more than `maxBufferedBytes` is dropped, never buffered in
 * the kernel's memory.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { createAdaptorServer } from '@hono/node-server';
import type { Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Api } from './api.js';
import { bearerOf, subprotocolToken, tokenMatches } from './token.js';

export const STREAM_PATH = '/api/v1/stream';

export interface HttpServiceOptions {
  api: Api;
  token: string;
  host: string;
  port: number;
  log: Logger;
  /** Bytes a stream client may have unsent before it is dropped (default 4 MiB). */
  maxBufferedBytes?: number;
}

export class HttpService {
  private server?: Server;
  private readonly wss: WebSocketServer;
  private readonly sockets = new Set<WebSocket>();

  constructor(private readonly o: HttpServiceOptions) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: 64 * 1024,
      handleProtocols: (protocols) => (protocols.has('clove') ? 'clove' : false),
    });
  }

  /** Listens; resolves with the bound address (port 0 picks a free port) or rejects naming the failure. */
  async listen(): Promise<AddressInfo> {
    const server = (this.server = createAdaptorServer({
      fetch: this.o.api.app.fetch,
      hostname: this.o.host,
    }) as Server);
    server.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.o.port, this.o.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.o.log.error({ err }, 'http server error'));
    return server.address() as AddressInfo;
  }

  /** Stream clients connected now. */
  get clients(): number {
    return this.sockets.size;
  }

  get address(): AddressInfo | undefined {
    return (this.server?.address() as AddressInfo | null) ?? undefined;
  }

  /** Accepts a WebSocket on the stream's path with a valid token; anything else gets a plain HTTP refusal. */
  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const refuse = (status: number, error: string, message: string) => {
      const body = JSON.stringify({ error, message });
      socket.end(
        `HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : 'Not Found'}\r\ncontent-type: application/json\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    if (url.pathname !== STREAM_PATH) return refuse(404, 'not_found', `no WebSocket at ${url.pathname}`);
    const presented =
      bearerOf(req.headers.authorization) ?? subprotocolToken(req.headers['sec-websocket-protocol']);
    if (!tokenMatches(presented, this.o.token))
      return refuse(401, 'unauthorized', 'missing or wrong bearer token');
    this.wss.handleUpgrade(req, socket, head, (ws) => this.serve(ws));
  }

  /** Sends the stream to one client until it goes, or falls too far behind. */
  private serve(ws: WebSocket): void {
    const limit = this.o.maxBufferedBytes ?? 4 * 1024 * 1024;
    this.sockets.add(ws);
    const unsubscribe = this.o.api.subscribe((json) => {
      if (ws.readyState !== ws.OPEN) return;
      if (ws.bufferedAmount > limit) {
        this.o.log.warn({ buffered: ws.bufferedAmount }, 'stream client too slow: dropped');
        unsubscribe();
        ws.terminate();
        return;
      }
      ws.send(json);
    });
    ws.on('close', () => {
      unsubscribe();
      this.sockets.delete(ws);
    });
    ws.on('error', () => ws.terminate());
    // The stream is one-way; whatever a client sends is ignored.
    ws.on('message', () => {});
  }

  async close(): Promise<void> {
    for (const ws of this.sockets) ws.terminate();
    this.sockets.clear();
    this.wss.close();
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections?.();
    });
  }
}
