/**
 * One client connection: decodes frames, runs requests strictly one after another (so replies leave in
 * request order, as the protocol promises), and applies backpressure both ways — a client that
 * pipelines faster than it is served stops being read, and a client that does not read its replies
 * stops being served. Nothing here buffers without bound.
 *
 * End of input is not the end of the connection: a client that shuts down its write side (half-close)
 * still gets the replies to what it sent, then the kernel ends its side. A peer that is gone entirely
 * (the socket closes, ECONNRESET, EPIPE) is torn down at once, and its parked calls are woken.
 */
import { encodeFrame, FrameDecoder, Op, type Frame } from '../../protocol/index.js';
import type { ConnStream, NativePushMode as NativePush } from './native-socket.js';
import type { Principal } from './principals.js';
import { writeScope } from './write-scope.js';

export type Reply = Buffer | string | object;

/**
 * The answer to a request the client asked not to be answered when it succeeds (SEND_BATCH `results:
 * "none"`): no frame at all (`frame` null), or a frame of its own opcode (SEND_REFUSED) in place of the
 * reply. Only a connection's requests get one (Dispatcher.dispatch with a call site that `answersQuietly`);
 * the reply itself still reaches the observers and the audit as any other.
 */
export class QuietAnswer {
  constructor(readonly frame: { opcode: number; payload: Reply } | null) {}
}

/** Where a push loop writes (a connection that opted in with HELLO `push`). */
export interface PushPort {
  /** Aborted when the connection closes. */
  readonly signal: AbortSignal;
  /** Whether more pushed frames may be written now. */
  room(): boolean;
  /** Writes PUSH frames (JSON texts) or, `opcode`, frames of that opcode, in order, in one writev. */
  write(payloads: (string | Buffer)[], opcode?: number): void;
  /** Resolves when there is room again, or the connection closed. */
  drained(): Promise<void>;
  /**
   * On the fast path: messages are pushed by the reactor itself (docs/fastpath.md, Rule 6); this switches
   * it. Absent for a connection served by TypeScript, where push.ts pushes messages too.
   */
  nativeMessages?(mode: NativePush): void;
}

export interface Dispatcher {
  dispatch(conn: Connection, frame: Frame): Reply | Promise<Reply>;
  closed(conn: Connection): void;
  /** The peer shut its side (end of file); replies may still be owed. */
  inputEnded?(conn: Connection): void;
  /** A framing error: the connection is answered once and closed. */
  badFrame(conn: Connection, message: string): void;
}

const MAX_QUEUED_REQUESTS = 256;
const MAX_UNSENT_BYTES = 8 * 1024 * 1024;
/**
 * Pushed frames stop while this many bytes wait for the peer (above the socket's high-water mark, so
 * that 'drain' follows): a client that does not read holds at most this much of its pushes in the kernel.
 */
const PUSH_HIGH_WATER = 1024 * 1024;
/** A corked batch of replies is written out at this size (one writev each), not held to its end. */
const CORK_FLUSH_BYTES = 64 * 1024;
/** How long a connection that sent a bad frame has to answer what came before it; then it is destroyed. */
const FATAL_GRACE_MS = 500;
/** How often a half-closed connection with a call pending checks that its peer is still there. */
const PEER_PROBE_MS = 250;

export class Connection {
  readonly decoder: FrameDecoder;
  /** Aborted when the connection closes (or is condemned by a bad frame): wakes parked RECV / POLL_EVENTS waits. */
  readonly abort = new AbortController();
  private queue: Frame[] = [];
  private busy = false;
  /** No more replies go out: the kernel is ending its side, or the socket is gone. */
  private closing = false;
  /** The peer shut down its write side: no more requests come; those received are still served. */
  private inputEnded = false;
  /** A framing error seen after the queued frames: answered once the queue is served, then destroyed. */
  private fatal: { opcode: number; message: string } | null = null;
  private fatalTimer: NodeJS.Timeout | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  /** Bytes of replies written under the current pump's cork (-1: not corked). */
  private corked = -1;
  /** Its requests may be answered by a QuietAnswer (SEND_BATCH `results: "none"`), a stand-in's never. */
  readonly answersQuietly = true;

  constructor(
    readonly socket: ConnStream,
    readonly principal: Principal,
    /** The transport it came in on (e.g. `unix:agent`). */
    readonly transport: string,
    private readonly dispatcher: Dispatcher,
    maxPayload: number,
  ) {
    this.decoder = new FrameDecoder(maxPayload);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      this.dispatcher.inputEnded?.(this);
      // A partial frame held at EOF can never complete: it is forgotten.
      this.inputEnded = true;
      this.pump();
      if (!this.closing) this.probePeer();
    });
    socket.on('drain', () => this.pump());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.closing = true;
      this.queue = [];
      this.stopTimers();
      this.abort.abort();
      this.dispatcher.closed(this);
    });
  }

  get id(): number {
    return this.principal.id;
  }

  private onData(chunk: Buffer): void {
    if (this.closing || this.fatal) return;
    const { frames, error } = this.decoder.push(chunk);
    for (const f of frames) this.queue.push(f);
    if (error) {
      this.condemn(error.opcode ?? Op.NOOP, error.message);
    } else if (this.queue.length >= MAX_QUEUED_REQUESTS) {
      this.socket.pause();
    }
    this.pump();
  }

  /**
   * A bad frame: the stream cannot be trusted and the peer may still be writing a huge body, so the
   * connection must go at once. Reading stops; a parked call is woken (it takes nothing, and so does
   * any blocking call still queued); what came before the bad header is answered if it is quick (within
   * FATAL_GRACE_MS), then the error reply, then the socket is destroyed.
   */
  private condemn(opcode: number, message: string): void {
    this.fatal = { opcode, message };
    this.dispatcher.badFrame(this, message);
    this.socket.pause();
    this.abort.abort();
    this.fatalTimer = setTimeout(() => this.close(), FATAL_GRACE_MS);
    this.fatalTimer.unref();
  }

  /**
   * On a Unix socket a peer that closed and one that only shut down its write side both read as EOF.
   * They differ on writing: a zero-length write fails with EPIPE once the peer is gone (its close shuts
   * down our send side too; its half-close does not). So while a call of a half-closed connection is
   * pending, the peer is probed now and every PEER_PROBE_MS: a gone peer is torn down ('error', then
   * 'close', which wakes the parked call) instead of a parked RECV taking messages nobody will read.
   */
  private probePeer(): void {
    const probe = (): void => {
      // Only on an idle write side: a reply still queued reports a gone peer by itself.
      if (this.closing || this.socket.destroyed || this.socket.writableLength > 0) return;
      this.socket.write(Buffer.alloc(0));
    };
    probe();
    this.probeTimer = setInterval(probe, PEER_PROBE_MS);
    this.probeTimer.unref();
  }

  private stopTimers(): void {
    if (this.fatalTimer) clearTimeout(this.fatalTimer);
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.fatalTimer = this.probeTimer = null;
  }

  /**
   * Serves queued requests under one cork: the replies a batch produces synchronously leave in one
   * writev instead of one write syscall each. A reply produced later (a parked RECV) is written by its
   * own pump or send, so it is never held back waiting for others. Corked bytes count in
   * writableLength, so the MAX_UNSENT_BYTES bound still applies.
   */
  private pump(): void {
    if (this.socket.destroyed) return this.serve();
    this.socket.cork();
    this.corked = 0;
    try {
      // Messages the batch queued for agents are committed to the store before its replies leave.
      writeScope(() => this.serve());
    } finally {
      this.corked = -1;
      this.socket.uncork();
    }
  }

  private serve(): void {
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
    if (this.closing) return;
    if (!this.busy && this.queue.length === 0) {
      if (this.fatal) {
        // Destroyed (not ended) once the error is flushed: a peer still writing gets EPIPE at once.
        const frame = encodeFrame(this.principal.id, this.fatal.opcode, {
          success: false,
          error: this.fatal.message,
          code: 'bad_frame',
        });
        this.closing = true;
        this.socket.write(frame, () => this.close());
        return;
      }
      if (this.inputEnded) {
        // Half-closed and every reply is out: end our side too (the socket then closes).
        this.closing = true;
        this.stopTimers();
        this.socket.end();
        return;
      }
    }
    if (
      !this.fatal &&
      !this.inputEnded &&
      this.queue.length < MAX_QUEUED_REQUESTS / 2 &&
      this.socket.isPaused()
    ) {
      this.socket.resume();
    }
  }

  send(opcode: number, reply: Reply): void {
    if (this.closing || this.socket.destroyed) return;
    // On the fast path the reactor holds a connection's later fast calls until their forwarded
    // predecessors are answered: it is told that this frame answers one (a PUSH frame answers none).
    this.socket.answers?.(1);
    if (reply instanceof QuietAnswer) {
      if (!reply.frame) {
        // Nothing to write, but the reactor must hear of the answer: outside a pump's cork, now.
        if (this.corked < 0) {
          this.socket.cork();
          this.socket.uncork();
        }
        return;
      }
      [opcode, reply] = [reply.frame.opcode, reply.frame.payload];
    }
    const frame = encodeFrame(this.principal.id, opcode, reply);
    this.socket.write(frame);
    // A long batch leaves in CORK_FLUSH_BYTES writes: the peer starts reading before the batch ends.
    if (this.corked >= 0 && (this.corked += frame.length) >= CORK_FLUSH_BYTES) {
      this.socket.uncork();
      this.socket.cork();
      this.corked = 0;
    }
  }

  /**
   * The connection as a push target (HELLO `push`): unsolicited PUSH frames are written only while the
   * bytes not yet taken by the peer stay under PUSH_HIGH_WATER, so a client that does not read stops
   * delivery (what is not pushed stays in its mailbox) and replies keep their own room below
   * MAX_UNSENT_BYTES.
   */
  get push(): PushPort {
    return (this.pushPort ??= this.pushPortOf());
  }

  private pushPort?: PushPort;

  /** Made on first use: most connections never push. */
  private pushPortOf(): PushPort {
    const native = this.socket.setPush?.bind(this.socket);
    return {
      ...(native ? { nativeMessages: (mode: NativePush) => native(mode) } : {}),
      signal: this.abort.signal,
      room: () => !this.closing && !this.socket.destroyed && this.socket.writableLength < PUSH_HIGH_WATER,
      write: (payloads, opcode = Op.PUSH) => {
        if (this.closing || this.socket.destroyed) return;
        this.socket.cork();
        for (const p of payloads) this.socket.write(encodeFrame(this.principal.id, opcode, p));
        this.socket.uncork();
      },
      drained: () =>
        new Promise<void>((resolve) => {
          if (this.closing || this.socket.destroyed || this.socket.writableLength < PUSH_HIGH_WATER)
            return resolve();
          const done = (): void => {
            this.socket.off('drain', done);
            this.abort.signal.removeEventListener('abort', done);
            resolve();
          };
          this.socket.on('drain', done);
          this.abort.signal.addEventListener('abort', done, { once: true });
        }),
    };
  }

  /** Closes at once: parked waits are woken (and take nothing) before the socket reports its close. */
  close(): void {
    this.closing = true;
    this.queue = [];
    this.stopTimers();
    this.abort.abort();
    this.socket.destroy();
  }
}
