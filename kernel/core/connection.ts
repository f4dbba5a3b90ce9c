/**
 * One client connection: decodes frames, runs requests strictly one after another (so replies leave in
 * request order, as the protocol promises), and applies backpressure both ways — a client that
 * pipelines faster than it is served stops being read, and a client that does not read its replies
 * stops being served. Nothing here buffers without bound.
 */
import type net from 'node:net';
import { encodeFrame, FrameDecoder, Op, type Frame } from '../../protocol/index.js';
import type { Principal } from './principals.js';

export type Reply = Buffer | string | object;

export interface Dispatcher {
  dispatch(conn: Connection, frame: Frame): Reply | Promise<Reply>;
  closed(conn: Connection): void;
  /** A framing error: the connection is answered once and closed. */
  badFrame(conn: Connection, message: string): void;
}

const MAX_QUEUED_REQUESTS = 256;
const MAX_UNSENT_BYTES = 8 * 1024 * 1024;

export class Connection {
  readonly decoder: FrameDecoder;
  /** Aborted when the connection closes: wakes parked RECV / POLL_EVENTS waits. */
  readonly abort = new AbortController();
  private queue: Frame[] = [];
  private busy = false;
  private closing = false;
  /** A framing error seen after the queued frames: answered once the queue is served, then close. */
  private fatal: { opcode: number; message: string } | null = null;

  constructor(
    readonly socket: net.Socket,
    readonly principal: Principal,
    /** The transport it came in on (e.g. `unix:agent`). */
    readonly transport: string,
    private readonly dispatcher: Dispatcher,
    maxPayload: number,
  ) {
    this.decoder = new FrameDecoder(maxPayload);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.pump());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.closing = true;
      this.queue = [];
      this.abort.abort();
      this.dispatcher.closed(this);
    });
  }

  get id(): number {
    return this.principal.id;
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    const { frames, error } = this.decoder.push(chunk);
    for (const f of frames) this.queue.push(f);
    if (error) {
      // Serve what came before the bad header, then one error reply, then close.
      this.fatal = { opcode: error.opcode ?? Op.NOOP, message: error.message };
      this.dispatcher.badFrame(this, error.message);
      this.socket.pause();
    } else if (this.queue.length >= MAX_QUEUED_REQUESTS) {
      this.socket.pause();
    }
    this.pump();
  }

  private pump(): void {
    while (
      !this.busy &&
      !this.closing &&
      this.queue.length &&
      this.socket.writableLength < MAX_UNSENT_BYTES
    ) {
      const f = this.queue.shift()!;
      let r: Reply | Promise<Reply>;
      try {
        r = this.dispatcher.dispatch(this, f);
      } catch (e) {
        r = { success: false, error: `internal error: ${(e as Error).message}`, code: 'internal' };
      }
      if (r instanceof Promise) {
        this.busy = true;
        r.then(
          (reply) => this.send(f.opcode, reply),
          (e: Error) =>
            this.send(f.opcode, { success: false, error: `internal error: ${e.message}`, code: 'internal' }),
        ).finally(() => {
          this.busy = false;
          this.pump();
        });
        return;
      }
      this.send(f.opcode, r);
    }
    if (this.fatal && !this.busy && !this.closing && this.queue.length === 0) {
      this.send(this.fatal.opcode, { success: false, error: this.fatal.message, code: 'bad_frame' });
      this.closing = true;
      this.socket.end();
      return;
    }
    if (
      !this.closing &&
      this.queue.length < MAX_QUEUED_REQUESTS / 2 &&
      this.socket.isPaused() &&
      !this.decoder.failed
    ) {
      this.socket.resume();
    }
  }

  send(opcode: number, reply: Reply): void {
    if (this.closing || this.socket.destroyed) return;
    this.socket.write(encodeFrame(this.principal.id, opcode, reply));
  }

  /** Closes at once: parked waits are woken (and take nothing) before the socket reports its close. */
  close(): void {
    this.closing = true;
    this.queue = [];
    this.abort.abort();
    this.socket.destroy();
  }
}
