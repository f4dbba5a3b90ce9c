/**
 * The cluster's mail bus on NATS JetStream (docs/cluster.md, "NATS JetStream"): durable mail per
 * destination name in the stream `<PREFIX>_MAIL`, consumed by whichever node owns the name through a
 * durable pull consumer named after the name (not the node), so that mail waiting for an agent whose node
 * died is delivered at its new home; events, broadcasts and kernel-to-kernel calls on core NATS.
 */
import {
  AckPolicy,
  connect,
  DeliverPolicy,
  DiscardPolicy,
  ErrorCode,
  Events,
  JSONCodec,
  nanos,
  NatsError,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type Msg,
  type NatsConnection,
  type StreamConfig,
} from 'nats';
import type { Logger } from 'pino';
import {
  BusAuthError,
  BusClosedError,
  BusConfigError,
  BusUnreachableError,
  CallTimeoutError,
  MailNotStoredError,
  MailRejectedError,
  MailTooLargeError,
  MailUnconfirmedError,
  NodeUnreachableError,
  RemoteCallError,
} from './bus-errors.js';
import type {
  ClusterBus,
  ClusterOptions,
  MailOptions,
  RemoteBroadcast,
  RemoteEvent,
  RemoteMessage,
} from './types.js';

export const MAIL_DEFAULTS: MailOptions = {
  maxPendingPerName: 10_000,
  maxBytes: 1024 ** 3,
  maxAgeS: 7 * 24 * 3600,
  duplicateWindowS: 120,
  ackWaitS: 30,
  fullRetryMs: 200,
  recentIds: 4096,
};

/** Default timeout of call() and of a JetStream publish's acknowledgement. */
const CALL_TIMEOUT_MS = 10_000;
const PUBLISH_TIMEOUT_MS = 10_000;
/** How long a call that came before serve() waits for it. */
const HANDLER_WAIT_MS = 10_000;
/** How long start() keeps trying to reach a NATS server before it gives up. */
const CONNECT_TIMEOUT_MS = 30_000;
/** JetStream API error codes (nats-server's errors.json). */
const JS_STREAM_NOT_FOUND = 10059;
const JS_CONSUMER_NOT_FOUND = 10014;
const JS_STREAM_NAME_IN_USE = 10058;
const TOKEN_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** A name's subject token: its UTF-8 bytes in lower-case hex (subjects and consumer names allow few characters). */
export function nameToken(name: string): string {
  return Buffer.from(name, 'utf8').toString('hex');
}

export interface BusDeps {
  log: Logger;
  /** How long start() keeps trying to reach NATS (default 30 s). */
  connectTimeoutMs?: number;
  /** How long send() waits for JetStream's acknowledgement (default 10 s). */
  publishTimeoutMs?: number;
}

/** One name this node consumes. */
interface Owned {
  name: string;
  deliver: (msg: RemoteMessage) => boolean;
  stopped: boolean;
  messages?: ConsumerMessages;
  /** msgIds delivered recently (insertion order: the oldest goes first when full). */
  recent: Set<string>;
  /** Settles once the consumer is bound (or the name was disowned meanwhile). */
  ready: Promise<void>;
}

interface RpcRequest {
  method: string;
  args: unknown;
  from: string;
}
type RpcReply = { ok: true; result: unknown } | { ok: false; code: string; error: string };

const jc = JSONCodec<unknown>();

export class JetStreamBus implements ClusterBus {
  readonly node: string;
  private readonly prefix: string;
  private readonly stream: string;
  private readonly mail: MailOptions;
  private readonly log: Logger;
  private readonly connectTimeoutMs: number;
  private readonly publishTimeoutMs: number;
  /** The servers without credentials (what errors and logs name), and the credentials the URLs carried. */
  private readonly servers: string[];
  private readonly auth: { user?: string; pass?: string; token?: string };
  private nc: NatsConnection | null = null;
  private js: JetStreamClient | null = null;
  private jsm: JetStreamManager | null = null;
  private closing: Promise<void> | null = null;
  private starting: Promise<void> | null = null;
  private readonly owned = new Map<string, Owned>();
  private readonly eventListeners = new Set<(e: RemoteEvent) => void>();
  private readonly broadcastListeners = new Set<(b: RemoteBroadcast) => void>();
  private handler: ((method: string, args: unknown, from: string) => Promise<unknown>) | null = null;
  /** Calls that came before serve(): woken by it. */
  private readonly handlerWaiters: (() => void)[] = [];
  private reconnectAttempt = 0;

  constructor(
    private readonly opts: ClusterOptions,
    deps: BusDeps,
  ) {
    if (!TOKEN_RE.test(opts.prefix)) {
      throw new BusConfigError(`cluster prefix ${JSON.stringify(opts.prefix)} must match ${TOKEN_RE.source}`);
    }
    if (!TOKEN_RE.test(opts.node)) {
      throw new BusConfigError(`node name ${JSON.stringify(opts.node)} must match ${TOKEN_RE.source}`);
    }
    if (opts.nats.length === 0) throw new BusConfigError('no NATS server given (--nats nats://HOST:PORT)');
    ({ servers: this.servers, auth: this.auth } = natsServers(opts.nats));
    this.mail = { ...MAIL_DEFAULTS, ...opts.mail };
    for (const [k, v] of Object.entries(this.mail)) {
      if (!Number.isFinite(v) || v <= 0)
        throw new BusConfigError(`mail option ${k} must be a positive number`);
    }
    if (this.mail.duplicateWindowS > this.mail.maxAgeS) {
      throw new BusConfigError('mail option duplicateWindowS must not exceed maxAgeS');
    }
    this.node = opts.node;
    this.prefix = opts.prefix;
    this.stream = `${opts.prefix.toUpperCase()}_MAIL`;
    this.log = deps.log.child({ part: 'cluster-bus' });
    this.connectTimeoutMs = deps.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    this.publishTimeoutMs = deps.publishTimeoutMs ?? PUBLISH_TIMEOUT_MS;
  }

  /**
   * Connects (trying every server until connectTimeoutMs; once connected, the client reconnects forever
   * with a growing delay), makes sure the mail stream exists with this node's limits, and subscribes to
   * events, broadcasts and this node's calls.
   */
  start(): Promise<void> {
    if (this.closing) return Promise.reject(new BusClosedError('start'));
    // Concurrent starts share one; a failed start may be tried again.
    this.starting ??= this.connectAndSetUp().catch((e: unknown) => {
      this.starting = null;
      throw e;
    });
    return this.starting;
  }

  private async connectAndSetUp(): Promise<void> {
    const deadline = Date.now() + this.connectTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        this.nc = await connect({
          ...this.auth,
          servers: this.servers,
          name: `clove-${this.node}`,
          maxReconnectAttempts: -1,
          reconnectDelayHandler: () => this.reconnectDelay(),
          pingInterval: 10_000,
          maxPingOut: 3,
          timeout: Math.max(1000, Math.min(10_000, deadline - Date.now())),
        });
        break;
      } catch (e) {
        if (e instanceof NatsError && (e.isAuthError() || e.isPermissionError())) {
          throw new BusAuthError(this.servers, e.message, { cause: e });
        }
        if (Date.now() + 250 >= deadline) {
          throw new BusUnreachableError(this.servers, (e as Error).message, { cause: e });
        }
        await sleep(Math.min(250 * 2 ** attempt, 2000, Math.max(0, deadline - Date.now())));
      }
    }
    const nc = this.nc;
    void this.watchStatus(nc);
    try {
      this.jsm = await nc.jetstreamManager();
      this.js = nc.jetstream({ timeout: this.publishTimeoutMs });
      await this.ensureStream();
    } catch (e) {
      await nc.close().catch(() => {});
      this.nc = null;
      if (e instanceof BusConfigError) throw e;
      throw new BusUnreachableError(this.servers, `JetStream: ${(e as Error).message}`, { cause: e });
    }
    nc.subscribe(`${this.prefix}.events.*`, { callback: (err, m) => this.onEventMsg(err, m) });
    nc.subscribe(`${this.prefix}.broadcast`, { callback: (err, m) => this.onBroadcastMsg(err, m) });
    this.subscribeRpc();
    // Once start() resolves the server has the subscriptions: the first event or call is not missed.
    await nc.flush();
    this.log.info({ servers: this.servers, stream: this.stream }, 'cluster bus connected');
  }

  /** Stops consuming every name and drains the connection (pending acks and replies go out first). Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      const owned = [...this.owned.values()];
      this.owned.clear();
      await Promise.all(owned.map((o) => this.stopOwned(o)));
      const nc = this.nc;
      if (!nc || nc.isClosed()) return;
      // drain() waits for the server: when it is gone, close without it.
      const drained = nc.drain().catch(() => {});
      if ((await Promise.race([drained.then(() => true), sleep(5000).then(() => false)])) === false) {
        await nc.close().catch(() => {});
      }
    })();
    return this.closing;
  }

  /** Publishes to JetStream with the message's msgId (de-duplicated); resolves once stored (its PubAck). */
  async send(msg: RemoteMessage): Promise<void> {
    const js = this.running('send mail').js!;
    const data = jc.encode(msg);
    const publish = () =>
      js.publish(`${this.prefix}.mail.${nameToken(msg.to)}`, data, {
        msgID: msg.msgId,
        timeout: this.publishTimeoutMs,
      });
    try {
      await publish();
    } catch (e) {
      if (!(e instanceof NatsError && e.code === ErrorCode.NoResponders && !e.api_error)) {
        throw this.sendError(msg.to, data.length, e);
      }
      // Nobody stores the subject: NATS came back without its store. Make the stream again, once.
      try {
        await this.ensureStream();
        await publish();
      } catch (e2) {
        throw this.sendError(msg.to, data.length, e2);
      }
    }
  }

  /**
   * Binds the durable consumer of `name` (creating it if needed) and consumes it on this node until
   * disown/close. Resolves once bound; while NATS is unreachable it keeps trying (callers that must not
   * wait need not await it). A second own of an owned name only replaces `deliver`.
   */
  async own(name: string, deliver: (msg: RemoteMessage) => boolean): Promise<void> {
    this.running('own a name');
    const existing = this.owned.get(name);
    if (existing) {
      existing.deliver = deliver;
      return existing.ready;
    }
    const o: Owned = { name, deliver, stopped: false, recent: new Set(), ready: Promise.resolve() };
    this.owned.set(name, o);
    o.ready = this.bind(o);
    return o.ready;
  }

  /** Stops consuming `name` here; its unacknowledged mail stays in the stream for the next owner. */
  async disown(name: string): Promise<void> {
    const o = this.owned.get(name);
    if (!o) return;
    this.owned.delete(name);
    await this.stopOwned(o);
  }

  publishEvent(e: RemoteEvent): void {
    this.publishCore(`${this.prefix}.events.${this.node}`, e, 'event');
  }

  onEvent(listener: (e: RemoteEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  broadcast(b: RemoteBroadcast): void {
    this.publishCore(`${this.prefix}.broadcast`, b, 'broadcast');
  }

  onBroadcast(listener: (b: RemoteBroadcast) => void): () => void {
    this.broadcastListeners.add(listener);
    return () => this.broadcastListeners.delete(listener);
  }

  /** Request/reply on `<prefix>.rpc.<node>`: the result, or the remote handler's error as a RemoteCallError. */
  async call(node: string, method: string, args: unknown, timeoutMs = CALL_TIMEOUT_MS): Promise<unknown> {
    const nc = this.running(`call ${method} on node ${node}`).nc!;
    if (!TOKEN_RE.test(node)) throw new NodeUnreachableError(node, method);
    const req: RpcRequest = { method, args: args ?? null, from: this.node };
    let m: Msg;
    try {
      m = await nc.request(`${this.prefix}.rpc.${node}`, jc.encode(req), { timeout: timeoutMs });
    } catch (e) {
      if (e instanceof NatsError && e.code === ErrorCode.NoResponders)
        throw new NodeUnreachableError(node, method);
      if (e instanceof NatsError && e.code === ErrorCode.Timeout)
        throw new CallTimeoutError(node, method, timeoutMs);
      if (
        e instanceof NatsError &&
        (e.code === ErrorCode.ConnectionClosed || e.code === ErrorCode.ConnectionDraining)
      )
        throw new BusClosedError(`call ${method} on node ${node}`);
      throw e;
    }
    const reply = decode(m.data) as RpcReply | undefined;
    if (!reply || typeof reply !== 'object' || typeof reply.ok !== 'boolean') {
      throw new RemoteCallError(
        node,
        method,
        'bad_reply',
        'the node answered something that is not a call reply',
      );
    }
    if (!reply.ok) throw new RemoteCallError(node, method, String(reply.code), String(reply.error));
    return reply.result;
  }

  /**
   * Answers calls to this node. The node's call subject is subscribed from start() on: calls that come
   * before serve() wait for it (up to HANDLER_WAIT_MS, then `not_supported`).
   */
  serve(handler: (method: string, args: unknown, from: string) => Promise<unknown>): void {
    this.handler = handler;
    for (const w of this.handlerWaiters.splice(0)) w();
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────

  /** The connection for an operation that needs the bus running (throws BusClosedError otherwise). */
  private running(what: string): { nc: NatsConnection; js: JetStreamClient; jsm: JetStreamManager } {
    if (this.closing || !this.nc || !this.js || !this.jsm) throw new BusClosedError(what);
    return { nc: this.nc, js: this.js, jsm: this.jsm };
  }

  /**
   * A fire-and-forget publish (events, broadcasts: at most once, like core NATS): never throws into the
   * kernel's event path; what cannot go (not started, closed, not JSON, over max_payload) is logged.
   */
  private publishCore(subject: string, value: unknown, what: string): void {
    const nc = this.nc;
    if (this.closing || !nc || nc.isClosed()) return;
    try {
      nc.publish(subject, jc.encode(value));
    } catch (e) {
      this.log.warn({ subject, err: (e as Error).message }, `cannot publish the ${what}`);
    }
  }

  /** Reconnect delay: 250 ms doubling to 2 s with jitter, reset once connected again. */
  private reconnectDelay(): number {
    const d = Math.min(250 * 2 ** this.reconnectAttempt, 2000);
    this.reconnectAttempt++;
    return d / 2 + Math.random() * (d / 2);
  }

  /** Logs connection changes (naming the servers) and resets the reconnect backoff. */
  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === Events.Disconnect) {
        this.log.warn({ server: s.data, servers: this.servers }, 'cluster bus lost NATS; reconnecting');
      } else if (s.type === Events.Reconnect) {
        this.reconnectAttempt = 0;
        this.log.info({ server: s.data }, 'cluster bus reconnected to NATS');
      } else if (s.type === Events.Error) {
        this.log.warn({ err: s.data, servers: this.servers }, 'cluster bus NATS error');
      }
    }
  }

  /** Creates the mail stream, or brings an existing one's limits to this node's (a stream's retention cannot change). */
  private async ensureStream(): Promise<void> {
    const jsm = this.jsm!;
    const want: Partial<StreamConfig> = {
      name: this.stream,
      subjects: [`${this.prefix}.mail.*`],
      storage: StorageType.File,
      retention: RetentionPolicy.Workqueue,
      discard: DiscardPolicy.New,
      discard_new_per_subject: true,
      max_msgs_per_subject: this.mail.maxPendingPerName,
      max_bytes: this.mail.maxBytes,
      max_age: nanos(this.mail.maxAgeS * 1000),
      duplicate_window: nanos(this.mail.duplicateWindowS * 1000),
      num_replicas: 1,
    };
    for (;;) {
      let have: StreamConfig;
      try {
        have = (await jsm.streams.info(this.stream)).config;
      } catch (e) {
        if (jsErrCode(e) !== JS_STREAM_NOT_FOUND) throw e;
        try {
          await jsm.streams.add(want);
          return;
        } catch (e2) {
          if (jsErrCode(e2) === JS_STREAM_NAME_IN_USE) continue; // another node made it first
          throw e2;
        }
      }
      if (have.retention !== RetentionPolicy.Workqueue) {
        throw new BusConfigError(
          `stream ${this.stream} exists with retention ${have.retention}; the mail stream needs workqueue (delete it or use another prefix)`,
        );
      }
      const keys = [
        'max_msgs_per_subject',
        'max_bytes',
        'max_age',
        'duplicate_window',
        'discard',
        'discard_new_per_subject',
      ] as const;
      if (keys.some((k) => have[k] !== want[k])) {
        await jsm.streams.update(this.stream, { ...have, ...want } as StreamConfig);
        this.log.info({ stream: this.stream }, 'mail stream limits updated');
      }
      return;
    }
  }

  /**
   * Creates the durable consumer of a name if it does not exist (or updates its ack wait). With `fresh`
   * (a node starting to own the name, which it claimed in etcd first: no one else owns it), a consumer
   * that still has mail handed out unacknowledged or pulls waiting is made again: they belong to a
   * previous owner that died or was cut off without the server noticing, and would hold that mail until
   * its ack wait (30 s) — the work-queue stream keeps every unacknowledged message for the new consumer.
   */
  private async ensureConsumer(name: string, fresh = false): Promise<string> {
    const jsm = this.jsm!;
    const token = nameToken(name);
    const durable = `mail_${token}`;
    const want: Partial<ConsumerConfig> = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: `${this.prefix}.mail.${token}`,
      ack_wait: nanos(this.mail.ackWaitS * 1000),
      max_deliver: -1,
      // A consumer nobody binds for as long as mail may wait is removed; mail still waiting is kept by
      // the work-queue stream and delivered when the name's consumer is made again.
      inactive_threshold: nanos(this.mail.maxAgeS * 1000),
    };
    try {
      const info = await jsm.consumers.info(this.stream, durable);
      if (fresh && (info.num_ack_pending > 0 || info.num_waiting > 0)) {
        this.log.info(
          { name, ackPending: info.num_ack_pending, waiting: info.num_waiting },
          'mail consumer held by a previous owner: making it again',
        );
        await jsm.consumers.delete(this.stream, durable).catch((e: unknown) => {
          if (jsErrCode(e) !== JS_CONSUMER_NOT_FOUND) throw e;
        });
        await jsm.consumers.add(this.stream, want);
        return durable;
      }
      const have = info.config;
      if (have.ack_wait !== want.ack_wait) {
        // Another node made it with another ack wait: ours, if the server lets us (it still works if not).
        await jsm.consumers
          .update(this.stream, durable, { ack_wait: want.ack_wait })
          .catch((e: Error) => this.log.warn({ name, err: e.message }, 'cannot update the mail consumer'));
      }
    } catch (e) {
      if (jsErrCode(e) !== JS_CONSUMER_NOT_FOUND) throw e;
      await jsm.consumers.add(this.stream, want); // the same config twice (two nodes racing) is no error
    }
    return durable;
  }

  /**
   * Binds a name's consumer and consumes it with a callback (no client-side buffer: a message is
   * delivered, acked or nak'ed as it arrives). Retries with backoff until bound, disowned or closed; when
   * the consume loop ends on its own (consumer or stream gone), binds again. `fresh`: the first binding of
   * an own() (ensureConsumer's `fresh`).
   */
  private async bind(o: Owned, fresh = true): Promise<void> {
    for (let attempt = 0; !o.stopped && !this.closing; attempt++) {
      try {
        const durable = await this.ensureConsumer(o.name, fresh);
        if (o.stopped) return;
        const consumer = await this.js!.consumers.get(this.stream, durable);
        const messages = await consumer.consume({ max_messages: 100, callback: (m) => this.onMail(o, m) });
        if (o.stopped) {
          await messages.close();
          return;
        }
        o.messages = messages;
        void this.watchConsumer(o, messages);
        this.log.debug({ name: o.name, durable }, 'consuming mail');
        return;
      } catch (e) {
        if (o.stopped || this.closing) return;
        // NATS came back without its store: the stream is made again (its mail is gone with the store).
        if (jsErrCode(e) === JS_STREAM_NOT_FOUND) await this.ensureStream().catch(() => {});
        const delay = Math.min(250 * 2 ** attempt, 5000);
        this.log.warn(
          { name: o.name, err: (e as Error).message, retryMs: delay },
          'cannot bind mail consumer',
        );
        await sleep(delay);
      }
    }
  }

  /** Re-makes a consumer (or the stream) that vanished under a running consume, and rebinds when it ended. */
  private async watchConsumer(o: Owned, messages: ConsumerMessages): Promise<void> {
    void (async () => {
      for await (const s of await messages.status()) {
        if (s.type === 'consumer_not_found' || s.type === 'stream_not_found') {
          this.log.warn({ name: o.name, what: s.type }, 'mail consumer lost; making it again');
          try {
            if (s.type === 'stream_not_found') await this.ensureStream();
            await this.ensureConsumer(o.name);
            // The consume would retry only after its backoff (its pull expiry): end it and bind at once.
            await messages.close();
          } catch (e) {
            this.log.warn({ name: o.name, err: (e as Error).message }, 'cannot make mail consumer again');
          }
        }
      }
    })().catch(() => {});
    const err = await messages.closed();
    if (o.stopped || this.closing || this.owned.get(o.name) !== o) return;
    this.log.warn({ name: o.name, err: err ? err.message : undefined }, 'mail consume ended; binding again');
    o.messages = undefined;
    // Not fresh: the consumer is this node's already, and a second owner of a moment (a partition) would
    // otherwise take it from this one and back again.
    o.ready = this.bind(o, false);
  }

  /**
   * Stops a name's consume loop (mail it did not ack is redelivered to the next owner). Does not wait for
   * a bind in progress (NATS may be down): bind closes what it made once it sees `stopped`, and mail that
   * arrives meanwhile is nak'ed at once.
   */
  private async stopOwned(o: Owned): Promise<void> {
    o.stopped = true;
    const m = o.messages;
    o.messages = undefined;
    if (m) await m.close().catch(() => {});
  }

  /**
   * One message of an owned name: delivered and acked; nak'ed with a delay when the mailbox is full or
   * deliver threw; acked without delivering when its msgId was delivered here already (a redelivery
   * whose ack was lost). Never throws: a throwing callback would end the consume loop.
   */
  private onMail(o: Owned, m: JsMsg): void {
    try {
      if (o.stopped) {
        m.nak();
        return;
      }
      const msg = decode(m.data) as RemoteMessage | undefined;
      if (!isRemoteMessage(msg)) {
        this.log.error({ name: o.name, seq: m.seq }, 'malformed mail on the bus; dropped');
        m.term();
        return;
      }
      if (o.recent.has(msg.msgId)) {
        m.ack();
        return;
      }
      let ok: boolean;
      try {
        ok = o.deliver(msg);
      } catch (e) {
        const delay = Math.min(this.mail.fullRetryMs * 2 ** Math.min(m.info.redeliveryCount, 8), 30_000);
        this.log.warn({ name: o.name, msgId: msg.msgId, err: (e as Error).message }, 'mail delivery threw');
        m.nak(delay);
        return;
      }
      if (!ok) {
        m.nak(this.mail.fullRetryMs);
        return;
      }
      o.recent.add(msg.msgId);
      if (o.recent.size > this.mail.recentIds) o.recent.delete(o.recent.values().next().value!);
      m.ack();
    } catch (e) {
      this.log.error({ name: o.name, err: (e as Error).message }, 'mail handling failed');
    }
  }

  /** Maps a failed JetStream publish to the bus's error classes. */
  private sendError(to: string, bytes: number, e: unknown): Error {
    if (e instanceof NatsError) {
      const api = e.api_error ?? e.jsError();
      if (api) return new MailRejectedError(to, api.description, api.err_code);
      if (e.code === ErrorCode.MaxPayloadExceeded) {
        return new MailTooLargeError(to, bytes, this.nc?.info?.max_payload ?? 0);
      }
      if (e.code === ErrorCode.NoResponders) {
        return new MailNotStoredError(to, `no mail stream ${this.stream} (is JetStream enabled?)`, {
          cause: e,
        });
      }
      if (e.code === ErrorCode.Timeout) {
        return new MailUnconfirmedError(to, this.publishTimeoutMs, this.servers, { cause: e });
      }
      if (e.code === ErrorCode.ConnectionClosed || e.code === ErrorCode.ConnectionDraining) {
        return new BusClosedError('send mail');
      }
    }
    return new MailNotStoredError(to, (e as Error).message, { cause: e });
  }

  private onEventMsg(err: NatsError | null, m: Msg): void {
    if (err) return;
    if (m.subject === `${this.prefix}.events.${this.node}`) return;
    const e = decode(m.data) as RemoteEvent | undefined;
    if (!e || typeof e !== 'object' || typeof e.type !== 'string') {
      this.log.warn({ subject: m.subject }, 'malformed event on the bus; ignored');
      return;
    }
    if (typeof e.node !== 'string' || !e.node)
      e.node = m.subject.slice(this.prefix.length + '.events.'.length);
    for (const l of this.eventListeners) {
      try {
        l(e);
      } catch (x) {
        this.log.error({ err: (x as Error).message }, 'event listener threw');
      }
    }
  }

  private onBroadcastMsg(err: NatsError | null, m: Msg): void {
    if (err) return;
    const b = decode(m.data) as RemoteBroadcast | undefined;
    if (!b || typeof b !== 'object' || typeof b.message !== 'string' || typeof b.fromNode !== 'string') {
      this.log.warn('malformed broadcast on the bus; ignored');
      return;
    }
    if (b.fromNode === this.node) return;
    for (const l of this.broadcastListeners) {
      try {
        l(b);
      } catch (x) {
        this.log.error({ err: (x as Error).message }, 'broadcast listener threw');
      }
    }
  }

  private subscribeRpc(): void {
    this.nc!.subscribe(`${this.prefix}.rpc.${this.node}`, {
      callback: (err, m) => {
        if (!err) void this.answer(m);
      },
    });
  }

  /** Whether a handler is there, waiting a while for serve() when a call came first (the node is starting). */
  private async waitHandler(): Promise<boolean> {
    if (this.handler) return true;
    let wake!: () => void;
    const served = new Promise<void>((r) => (wake = r));
    this.handlerWaiters.push(wake);
    const timer = setTimeout(wake, HANDLER_WAIT_MS);
    await served;
    clearTimeout(timer);
    const i = this.handlerWaiters.indexOf(wake);
    if (i >= 0) this.handlerWaiters.splice(i, 1);
    return this.handler !== null;
  }

  /** Runs the handler for one call and replies with its result or its error's message and code. */
  private async answer(m: Msg): Promise<void> {
    const req = decode(m.data) as RpcRequest | undefined;
    let reply: RpcReply;
    if (!req || typeof req !== 'object' || typeof req.method !== 'string' || typeof req.from !== 'string') {
      reply = { ok: false, code: 'invalid_request', error: 'a call needs {method, args, from}' };
    } else if (!(await this.waitHandler())) {
      reply = { ok: false, code: 'not_supported', error: 'this node serves no calls' };
    } else {
      try {
        const result = await this.handler!(req.method, req.args, req.from);
        reply = { ok: true, result: result === undefined ? null : result };
      } catch (e) {
        const code = (e as { code?: unknown }).code;
        reply = {
          ok: false,
          code: typeof code === 'string' && code ? code : 'internal',
          error: e instanceof Error ? e.message : String(e),
        };
      }
    }
    try {
      m.respond(jc.encode(reply));
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'cannot answer a call');
    }
  }
}

/**
 * Splits credentials off the server URLs (`nats://user:pass@host:port`, `nats://token@host:port`): the
 * nats client takes them as options, and errors and logs must name the servers without them.
 */
export function natsServers(urls: string[]): {
  servers: string[];
  auth: { user?: string; pass?: string; token?: string };
} {
  let auth: { user?: string; pass?: string; token?: string } | undefined;
  const servers = urls.map((u) => {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      return u; // host:port without a scheme: the client accepts it as it is
    }
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    const these = !user ? {} : pass ? { user, pass } : { token: user };
    if (auth && JSON.stringify(auth) !== JSON.stringify(these)) {
      throw new BusConfigError('the NATS server URLs carry different credentials: give the same to each');
    }
    auth = these;
    return user ? `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}` : u;
  });
  return { servers, auth: auth ?? {} };
}

function decode(data: Uint8Array): unknown {
  try {
    return jc.decode(data);
  } catch {
    return undefined;
  }
}

function isRemoteMessage(m: unknown): m is RemoteMessage {
  if (!m || typeof m !== 'object') return false;
  const r = m as Record<string, unknown>;
  return (
    typeof r.to === 'string' &&
    typeof r.from === 'number' &&
    (r.fromName === null || typeof r.fromName === 'string') &&
    typeof r.fromNode === 'string' &&
    typeof r.message === 'string' &&
    typeof r.msgId === 'string' &&
    typeof r.sentAt === 'number'
  );
}

function jsErrCode(e: unknown): number | undefined {
  return e instanceof NatsError ? (e.api_error?.err_code ?? e.jsError()?.err_code) : undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
