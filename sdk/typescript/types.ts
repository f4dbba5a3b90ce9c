/**
 * Request and reply shapes of the syscalls: generated from the contract (protocol/families/*.json), so
 * the SDK and the kernel cannot disagree. A few names of earlier SDK versions are kept as aliases.
 */
import type { Isolation, KernelEvent, Message, PollEventsReply } from '../../protocol/index.js';

export type {
  AgentInfo,
  BatchResult,
  AgentMetrics,
  AgentState,
  CgroupMetrics,
  FetchReply,
  HelloReply,
  Isolation,
  KernelEvent,
  KillReply,
  RestartReply,
  Limits,
  Message,
  Permissions,
  PollEventsReply,
  ProcessMetrics,
  RecvReply,
  Requests,
  SendBatchReply,
  SendRefusedReply as SendRefused,
  Replies,
  Scope,
  SpawnReply,
  SpawnRequest,
  SystemMetrics,
  ChatMessage,
  ThinkDelta,
  ThinkResult,
  ToolCall,
} from '../../protocol/index.js';

/** What `sendBatch(…, {results: "none"})` resolves with: the `ref` a SEND_REFUSED of that batch will carry. */
export interface SendBatchSent {
  ref: number;
}

/** An agent by id or by name. */
export type Target = number | string;
export type PollReply = PollEventsReply;
export type IsolationReport = Isolation;
/**
 * A message pushed by the kernel: RECV's fields and, when the kernel pushes the binary envelope
 * (PUSH_BINARY, every kernel of this version), `bytes`: the message's JSON text as the kernel queued it
 * (the bytes RECV's reply would carry), with `message` parsed from it only when read.
 */
export type PushedMessage = Message & { readonly bytes?: Buffer };
/** An event pushed by the kernel (PUSH, kind `event`): POLL_EVENTS' fields, and the drop count when any. */
export type PushedEvent = KernelEvent & { dropped?: number };
/**
 * One message of `sendBatch`: a target id (`to`, wins) or name (`toName`, or the wire's `to_name`), and
 * any JSON `message` (default `{}`).
 */
export interface BatchMessage {
  to?: number;
  toName?: string;
  to_name?: string;
  message?: unknown;
}
