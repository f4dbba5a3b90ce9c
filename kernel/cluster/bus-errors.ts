/**
 * What the mail bus (kernel/cluster/bus.ts) fails with: one class per condition, each naming what failed
 * and carrying a `code` so that the cluster service can map it onto a wire error (for RemoteCallError the
 * code is the remote error's own, e.g. `not_found`).
 */

/** Base of every bus error. */
export abstract class BusError extends Error {
  abstract readonly code: string;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The bus options are unusable (prefix or node not a valid NATS token, a limit out of range). */
export class BusConfigError extends BusError {
  readonly code = 'bus_config';
}

/** start() could not reach any NATS server (or JetStream is not enabled there). */
export class BusUnreachableError extends BusError {
  readonly code = 'bus_unreachable';
  constructor(
    readonly servers: string[],
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`NATS unreachable at ${servers.join(', ')}: ${detail}`, options);
  }
}

/** A NATS server refused the bus's credentials (none given, or wrong ones: `nats://user:pass@host:port`). */
export class BusAuthError extends BusError {
  readonly code = 'bus_auth';
  constructor(
    readonly servers: string[],
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`NATS at ${servers.join(', ')} refused the credentials: ${detail}`, options);
  }
}

/** The bus was used after close() (or before start()). */
export class BusClosedError extends BusError {
  readonly code = 'bus_closed';
  constructor(what: string) {
    super(`cluster bus is not running: cannot ${what}`);
  }
}

/** Nothing stores the mail subject (no JetStream, the mail stream gone and not made again): nothing was stored. */
export class MailNotStoredError extends BusError {
  readonly code = 'mail_not_stored';
  constructor(
    readonly to: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`mail to ${JSON.stringify(to)} not stored by JetStream: ${detail}`, options);
  }
}

/**
 * JetStream's acknowledgement did not come in time (NATS hung or cut off mid-publish): the message may
 * or may not be stored. Sending it again with the same msgId is safe (JetStream keeps one copy).
 */
export class MailUnconfirmedError extends BusError {
  readonly code = 'mail_unconfirmed';
  constructor(
    readonly to: string,
    readonly timeoutMs: number,
    servers: string[],
    options?: { cause?: unknown },
  ) {
    super(
      `mail to ${JSON.stringify(to)} not confirmed by JetStream at ${servers.join(', ')} within ${timeoutMs} ms: it may or may not be stored`,
      options,
    );
  }
}

/** The mail stream refused a message over one of its limits (mail waiting for the name, stream bytes). */
export class MailRejectedError extends BusError {
  readonly code = 'mail_rejected';
  constructor(
    readonly to: string,
    /** The stream's reason, e.g. `maximum messages per subject exceeded`. */
    readonly reason: string,
    /** JetStream's error code (10077: too much mail waiting for this name; 10047: stream bytes full …). */
    readonly errCode: number | undefined,
  ) {
    super(`mail to ${JSON.stringify(to)} refused by the mail stream: ${reason}`);
  }
}

/** A message is larger than the NATS server accepts in one publish (its max_payload). */
export class MailTooLargeError extends BusError {
  readonly code = 'mail_too_large';
  constructor(
    readonly to: string,
    readonly bytes: number,
    readonly maxPayload: number,
  ) {
    super(
      `mail to ${JSON.stringify(to)} is ${bytes} bytes with its envelope; NATS accepts at most ${maxPayload}`,
    );
  }
}

/** A kernel-to-kernel call found nobody serving the node (the node is down or not in the cluster). */
export class NodeUnreachableError extends BusError {
  readonly code = 'node_unreachable';
  constructor(
    readonly node: string,
    readonly method: string,
  ) {
    super(`node ${JSON.stringify(node)} is unreachable: no kernel answers ${method} on it`);
  }
}

/** A kernel-to-kernel call got no answer within its timeout (the node is busy, hung or cut off). */
export class CallTimeoutError extends BusError {
  readonly code = 'call_timeout';
  constructor(
    readonly node: string,
    readonly method: string,
    readonly timeoutMs: number,
  ) {
    super(`node ${JSON.stringify(node)} did not answer ${method} within ${timeoutMs} ms`);
  }
}

/** The remote kernel's handler threw: its message, and its code (the error's `code`, or `internal`). */
export class RemoteCallError extends BusError {
  constructor(
    readonly node: string,
    readonly method: string,
    /** The remote error's code (e.g. `not_found`), `internal` when it had none. */
    readonly code: string,
    /** The remote error's message as thrown there. */
    readonly remoteMessage: string,
  ) {
    super(`${method} on node ${JSON.stringify(node)} failed (${code}): ${remoteMessage}`);
  }
}
