// The contract (protocol/wire.json, protocol/families/*.json) against what is generated from it and
// against the TypeScript SDK.
import { describe, expect, it } from 'vitest';
import { stale } from './generate.mjs';
import { ERROR_CODES, OPCODES } from './index.js';
import { CloveClient } from '../sdk/typescript/client.js';
import { KERNEL_ERRORS } from '../sdk/typescript/errors.js';

describe('contract', () => {
  it('every generated file is current', async () => {
    const files = await stale();
    expect(files, `stale generated files: run \`npm run generate\` (${files.join(', ')})`).toEqual([]);
  }, 120_000);

  it('every opcode names a method of the TypeScript CloveClient', () => {
    const proto = CloveClient.prototype as unknown as Record<string, unknown>;
    const missing = OPCODES.filter(
      (op) => op.sdk.typescript && typeof proto[op.sdk.typescript] !== 'function',
    ).map((op) => `${op.name} → CloveClient.${op.sdk.typescript}`);
    expect(missing).toEqual([]);
  });

  it('the error codes are exactly the keys of KERNEL_ERRORS', () => {
    expect(Object.keys(KERNEL_ERRORS).sort()).toEqual([...ERROR_CODES].sort());
  });
});
