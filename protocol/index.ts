/**
 * The Clove wire contract: framing (frame.ts) and everything generated from the contract files
 * (wire.json, families/*.json): the opcode table, error codes, event types, request and reply types and
 * the request schemas. Clients and the kernel both import it; it imports neither.
 */
export * from './frame.js';
export * from './generated.js';
export * from './push-binary.js';

import { OPCODES, type OpInfo, type OpName } from './generated.js';

const byCode = new Map<number, OpInfo>(OPCODES.map((o) => [o.code, o]));

/** The log name of an opcode, or UNKNOWN for a byte that is not in the table. */
export function opName(op: number): OpName | 'UNKNOWN' {
  return byCode.get(op)?.name ?? 'UNKNOWN';
}

export function isKnownOp(op: number): boolean {
  return byCode.has(op);
}

/** Metadata of an opcode byte (family, status, SDK method names), undefined when not in the table. */
export function opInfo(op: number): OpInfo | undefined {
  return byCode.get(op);
}
