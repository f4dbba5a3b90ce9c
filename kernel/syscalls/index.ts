/**
 * The syscall table: opcode → handler. Each family registers its handlers in its own file; opcodes of
 * the public kernel that are not implemented yet answer `not_supported` rather than silently echoing.
 */
import { NotSupportedError, UnknownOpcodeError } from '../errors.js';
import type { Caller, Kernel } from '../kernel.js';
import type { Reply } from '../server/connection.js';
import { Op, opName, isKnownOp } from '../protocol/opcodes.js';
import type { Payload } from '../validate.js';
import { core } from './core.js';
import { lifecycle } from './lifecycle.js';
import { ipc } from './ipc.js';
import { state } from './state.js';
import { events } from './events.js';
import { permissions } from './permissions.js';
import { metrics } from './metrics.js';

export interface Handler {
  /** Raw handlers get the payload bytes; the rest get a parsed JSON object. */
  raw?: boolean;
  fn: (k: Kernel, c: Caller, p: Payload & Buffer) => Reply | Promise<Reply>;
}

export type HandlerTable = Partial<Record<keyof typeof Op, Handler>>;

class Table {
  private map = new Map<number, Handler>();

  constructor(...families: HandlerTable[]) {
    for (const f of families) {
      for (const [name, h] of Object.entries(f)) {
        const op = Op[name as keyof typeof Op];
        if (this.map.has(op)) throw new Error(`syscall ${name} registered twice`);
        this.map.set(op, h!);
      }
    }
    for (const [name, op] of Object.entries(Op)) {
      if (this.map.has(op)) continue;
      this.map.set(op, {
        fn: () => {
          throw new NotSupportedError(`${name} is not supported by this kernel yet`);
        },
      });
    }
  }

  get(op: number): Handler | undefined {
    return this.map.get(op);
  }

  unknown(op: number): Error {
    return isKnownOp(op)
      ? new NotSupportedError(`${opName(op)} is not supported`)
      : new UnknownOpcodeError(`unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
  }
}

export const handlers = new Table(core, lifecycle, ipc, state, events, permissions, metrics);
