/**
 * The opcode table of the Clove wire protocol, wire-compatible with the public Clove kernel
 * (see docs/protocol.md). One byte on the wire; names are the log names without the SYS_ prefix.
 */
export const Op = {
  NOOP: 0x00,
  THINK: 0x01,
  EXEC: 0x02,
  READ: 0x03,
  WRITE: 0x04,
  SPAWN: 0x10,
  KILL: 0x11,
  LIST: 0x12,
  PAUSE: 0x14,
  RESUME: 0x15,
  SEND: 0x20,
  RECV: 0x21,
  BROADCAST: 0x22,
  REGISTER: 0x23,
  STORE: 0x30,
  FETCH: 0x31,
  DELETE: 0x32,
  KEYS: 0x33,
  GET_PERMS: 0x40,
  SET_PERMS: 0x41,
  HTTP: 0x50,
  SUBSCRIBE: 0x60,
  UNSUBSCRIBE: 0x61,
  POLL_EVENTS: 0x62,
  EMIT: 0x63,
  RECORD_START: 0x70,
  RECORD_STOP: 0x71,
  RECORD_STATUS: 0x72,
  REPLAY_START: 0x73,
  REPLAY_STATUS: 0x74,
  GET_AUDIT_LOG: 0x76,
  SET_AUDIT_CONFIG: 0x77,
  ASYNC_POLL: 0x80,
  WORLD_CREATE: 0xa0,
  WORLD_DESTROY: 0xa1,
  WORLD_LIST: 0xa2,
  WORLD_JOIN: 0xa3,
  WORLD_LEAVE: 0xa4,
  WORLD_EVENT: 0xa5,
  WORLD_STATE: 0xa6,
  WORLD_SNAPSHOT: 0xa7,
  WORLD_RESTORE: 0xa8,
  TUNNEL_CONNECT: 0xb0,
  TUNNEL_DISCONNECT: 0xb1,
  TUNNEL_STATUS: 0xb2,
  TUNNEL_LIST_REMOTES: 0xb3,
  TUNNEL_CONFIG: 0xb4,
  METRICS_SYSTEM: 0xc0,
  METRICS_AGENT: 0xc1,
  METRICS_ALL_AGENTS: 0xc2,
  METRICS_CGROUP: 0xc3,
  /** Clove extension (not in the public kernel): heartbeat / watchdog keep-alive. */
  HEARTBEAT: 0xd0,
  LLM_REPORT: 0xf0,
  HELLO: 0xfe,
  EXIT: 0xff,
} as const;

export type OpName = keyof typeof Op;
export type OpCode = (typeof Op)[OpName];

const names = new Map<number, OpName>(Object.entries(Op).map(([k, v]) => [v, k as OpName]));

/** The log name of an opcode, or UNKNOWN for a byte that is not in the table. */
export function opName(op: number): OpName | 'UNKNOWN' {
  return names.get(op) ?? 'UNKNOWN';
}

export function isKnownOp(op: number): op is OpCode {
  return names.has(op);
}
