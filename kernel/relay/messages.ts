/**
 * The tunnel's messages between a kernel and the relay (docs/relay.md "The tunnel"): JSON text frames on
 * one WebSocket, each tagged with the id of the request or channel it belongs to, bodies and binary data
 * as base64. One format both ways keeps the tunnel debuggable; base64 costs a third more bytes, which the
 * limits below account for.
 */

/** Version of this message set; the kernel sends it in `hello`. */
export const TUNNEL_PROTOCOL = 1;

/** Headers as pairs (a header may repeat, e.g. set-cookie). */
export type HeaderPairs = [string, string][];

/** Kinds of WebSocket channel a relay user may open to a kernel. */
export type ChannelKind = 'stream' | 'agent';

/** Relay → kernel. */
export type RelayMessage =
  /** The relay accepted the session (sent once, first). */
  | { t: 'welcome'; machine: string }
  /** An HTTP request for the kernel's API (`path` includes the query string). */
  | { t: 'req'; id: number; method: string; path: string; headers: HeaderPairs; body?: string }
  /** The relay gave up on request `id` (timeout, the user left): the kernel stops working on it. */
  | { t: 'cancel'; id: number }
  /** A user opened a WebSocket channel: the API's stream, or a wire-protocol session (`agent`). */
  | { t: 'open'; id: number; kind: ChannelKind; user: string }
  /** Data on a channel: text (stream) or base64 binary (agent frames). */
  | { t: 'data'; id: number; data: string; binary?: boolean }
  | { t: 'close'; id: number; code?: number; reason?: string };

/** Kernel → relay. */
export type KernelMessage =
  | { t: 'hello'; protocol: number; version: string; agents: number }
  /** Sent every few seconds: what the fleet view shows. */
  | { t: 'status'; agents: number }
  | { t: 'res'; id: number; status: number; headers: HeaderPairs; body: string }
  | { t: 'data'; id: number; data: string; binary?: boolean }
  | { t: 'close'; id: number; code?: number; reason?: string };

/** Close codes of the tunnel WebSocket that tell the kernel not to dial again. */
export const CLOSE_REPLACED = 4409;
export const CLOSE_REVOKED = 4401;

/** Limits shared by both ends (docs/relay.md "Limits"). */
export const LIMITS = {
  /** Largest HTTP request body a user may send through the relay. */
  requestBody: 1024 * 1024,
  /** Largest HTTP response body a kernel sends back (larger: 502 upstream_failed). */
  responseBody: 16 * 1024 * 1024,
  /** Largest tunnel message (a response body in base64 and its envelope). */
  tunnelMessage: 24 * 1024 * 1024,
  /** Largest message on a user's WebSocket (an agent session's frame: the wire's 1 MiB payload + header). */
  userMessage: 1024 * 1024 + 64 * 1024,
  /** Requests in flight per machine; beyond it the relay answers 503 at once. */
  pendingRequests: 256,
  /** Open channels (streams, agent sessions) per machine. */
  channels: 128,
  /** Bytes queued on the tunnel socket beyond which new work is refused and slow channels are closed. */
  tunnelHighWater: 8 * 1024 * 1024,
  /** Bytes queued towards one user's WebSocket beyond which that channel is closed (1013). */
  userHighWater: 1024 * 1024,
  /** Bytes a remote session's frames may wait unread in the kernel before it is closed. */
  sessionInput: 4 * 1024 * 1024,
} as const;

/** Heartbeat: the relay pings this often; either side drops a tunnel silent for 3 intervals. */
export const HEARTBEAT_MS = 10_000;
