/** What bench/messaging.ts and its peers (bench/lib/msg-peer.ts) agree on: flow control, orders, answers. */

/** Data messages a producer keeps unacknowledged at most. */
export const WINDOW = 1024;
/** A consumer acknowledges every ACK_EVERY data messages (WINDOW is a multiple of it). */
export const ACK_EVERY = 256;

/** An order to a producer: `size`-byte bodies, `ms` of pipelined sending, then `pings` round trips. */
export interface Order {
  size: number;
  ms: number;
  pings: number;
}

/** A producer's answer: messages delivered (all acknowledged) in `seconds`, and each round trip in µs. */
export interface Outcome {
  delivered: number;
  seconds: number;
  rtt_us: number[];
  /**
   * The producer's own CPU time (user + system, every thread: process.cpuUsage) over its round trips, in
   * µs: what a client spends to send one message and take one back, with nothing else to do.
   */
  rtt_cpu_us: number;
}
