/**
 * Push delivery (HELLO `push`): for a connection that opted in, a loop takes the caller's messages out
 * of its mailbox (as RECV takes them: removed, so never delivered twice) and its subscribed events out
 * of its event queue (as POLL_EVENTS does), and writes each as one PUSH frame. It writes only while the
 * connection has room (PushPort.room): a client that does not read pauses delivery, and what is not
 * pushed stays in the mailbox under its budgets. Pushed messages are taken without a lease: once a
 * message is handed to the socket it is delivered (a client that needs redelivery after a crash uses
 * RECV with `lease`). The pusher is a holder of its own, so it never acknowledges a RECV's lease.
 */
import type { PushPort } from '../core/connection.js';
import type { EventBus } from '../events/bus.js';
import { encodePushBinary, Op } from '../../protocol/index.js';
import { messageFields, type Mail } from './mailboxes.js';

/** Items taken per turn: small enough that a flood of messages does not hold the event loop. */
const BATCH = 64;
/** Messages in one batched PUSH frame at most (and the reply byte limit), as the reactor's. */
const BATCH_FRAME = 4096;
/** A parked pusher re-checks this often even without a wake-up (a wake-up is the normal path). */
const IDLE_MS = 60_000;

export interface PushMode {
  messages: boolean;
  events: boolean;
  /** Messages several to a frame (`{"kind":"messages","messages":[…]}`) instead of one frame each. */
  batch?: boolean;
  /** Messages as PUSH_BINARY frames (protocol/push-binary.ts) instead of PUSH JSON; absent: JSON. */
  format?: 'binary';
}

interface Sources {
  mail: Mail;
  events: EventBus;
  /** The most bytes one turn takes (the kernel's reply limit). */
  maxBytes: number;
  /** Counts messages as received (the caller's stats), as RECV does. */
  received(n: number): void;
}

class Pusher {
  mode: PushMode = { messages: false, events: false };
  private running = false;
  /** Ends the current idle wait when the mode changes. */
  private nudge = new AbortController();

  constructor(
    private readonly port: PushPort,
    private readonly id: number,
    private readonly src: Sources,
  ) {}

  set(mode: PushMode): void {
    this.mode = mode;
    this.nudge.abort();
    if (!this.running && (mode.messages || mode.events)) {
      this.running = true;
      // After the current call's reply: HELLO's reply leaves before the first push.
      setImmediate(() => {
        this.run().finally(() => {
          this.running = false;
        });
      });
    }
  }

  private active(): boolean {
    return !this.port.signal.aborted && (this.mode.messages || this.mode.events);
  }

  private async run(): Promise<void> {
    const { mail, events } = this.src;
    while (this.active()) {
      if (!this.port.room()) {
        await this.port.drained();
        continue;
      }
      // PUSH JSON texts of this turn (events, and messages unless they go as PUSH_BINARY).
      const out: string[] = [];
      const now = Date.now();
      const ms = this.mode.messages
        ? mail.take(this.id, this.mode.batch ? BATCH_FRAME : BATCH, this, false, this.src.maxBytes)
        : [];
      if (ms.length) {
        if (this.mode.format === 'binary') {
          const items = ms.map((m) => ({ ...m, age_ms: now - m.sentAt }));
          const frames = this.mode.batch
            ? [encodePushBinary(items)]
            : items.map((m) => encodePushBinary([m]));
          this.port.write(frames, Op.PUSH_BINARY);
        } else if (this.mode.batch) {
          const items = ms.map((m) => `{${messageFields(m, now)}}`);
          out.push(`{"kind":"messages","messages":[${items.join(',')}],"count":${items.length}}`);
        } else for (const m of ms) out.push(`{"kind":"message",${messageFields(m, now)}}`);
        this.src.received(ms.length);
      }
      if (this.mode.events) {
        const { events: list, dropped } = events.poll(this.id, BATCH, this.src.maxBytes);
        list.forEach((e, i) =>
          out.push(
            // An event's JSON text is an object: `kind` (and the drop count, once) go in front.
            `{"kind":"event",${i === 0 && dropped > 0 ? `"dropped":${dropped},` : ''}${e.json.slice(1)}`,
          ),
        );
      }
      if (out.length) this.port.write(out);
      if (ms.length || out.length) {
        // Let other connections run between turns.
        await new Promise<void>((r) => setImmediate(r));
        continue;
      }
      await this.idle();
    }
  }

  /** Sleeps until a message or an event arrives for the id, the mode changes, or the connection closes. */
  private async idle(): Promise<void> {
    if (this.nudge.signal.aborted) this.nudge = new AbortController();
    const stop = new AbortController();
    const end = (): void => stop.abort();
    this.port.signal.addEventListener('abort', end, { once: true });
    this.nudge.signal.addEventListener('abort', end, { once: true });
    const waits: Promise<unknown>[] = [];
    if (this.mode.messages) waits.push(this.src.mail.wait(this.id, IDLE_MS, stop.signal));
    if (this.mode.events) waits.push(this.src.events.wait(this.id, IDLE_MS, stop.signal));
    try {
      await Promise.race(waits);
    } finally {
      stop.abort();
      this.port.signal.removeEventListener('abort', end);
      this.nudge.signal.removeEventListener('abort', end);
    }
  }
}

const pushers = new WeakMap<PushPort, Pusher>();

/** Connections whose messages the fast path's reactor pushes (nativeMessages switched on), and how. */
const nativePushed = new WeakMap<PushPort, Pick<PushMode, 'batch' | 'format'>>();

/**
 * Sets what `port` (the caller's connection, id `id`) has pushed to it; returns the mode now in force. On
 * the fast path the reactor pushes the messages, and the loop here only the events.
 */
export function setPush(port: PushPort, id: number, mode: PushMode, src: Sources): PushMode {
  let loop = mode;
  if (port.nativeMessages) {
    const how = { batch: mode.batch === true, ...(mode.format ? { format: mode.format } : {}) };
    port.nativeMessages({ messages: mode.messages, batch: how.batch, binary: mode.format === 'binary' });
    if (mode.messages) nativePushed.set(port, how);
    else nativePushed.delete(port);
    loop = { messages: false, events: mode.events };
  }
  let p = pushers.get(port);
  if (!p) {
    if (!loop.messages && !loop.events) return mode;
    p = new Pusher(port, id, src);
    pushers.set(port, p);
  }
  p.set(loop);
  return mode;
}

/** What `port` has pushed to it now. */
export function pushMode(port: PushPort | undefined): PushMode {
  const m = port && pushers.get(port)?.mode;
  const out: PushMode = m ? { ...m } : { messages: false, events: false };
  const native = port && nativePushed.get(port);
  if (native) Object.assign(out, { messages: true }, native);
  if (!out.messages) {
    delete out.batch;
    delete out.format;
  }
  return out;
}
