/** What bench/messaging.ts and its peers (bench/lib/msg-peer.ts) agree on: flow control, orders, answers. */

/** Data messages a producer keeps unacknowledged at most. */
export const WINDOW = 1024;
/** A consumer acknowledges every ACK_EVERY data messages (WINDOW is a multiple of it). */
export const ACK_EVERY = 256;

/**
 * An order to a producer: `size`-byte bodies, `ms` of pipelined sending, then `warmup` round trips that are
 * not timed, then `pings` timed ones.
 */
export interface Order {
  size: number;
  ms: number;
  /**
   * Round trips before the timed ones, not timed: the round-trip code of every peer (the producer's ping
   * loop, the consumer's echo, the client library's single-message path) is compiled by V8 only after it
   * has run a while, and the sending phase before runs other code. Without them the slowest round trips
   * bunched at the start of the timed ones and made most of a 4→4 p99 (reports/fastpath.md, "Warm-up").
   * Optional: 0 when absent.
   */
  warmup?: number;
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
