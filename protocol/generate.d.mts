// Types for generate.mjs, for the TypeScript code (protocol/contract.test.ts) that imports it.

/** The contract as read from protocol/wire.json and protocol/families/*.json. */
export interface Contract {
  wire: Record<string, unknown>;
  families: Record<string, unknown>[];
  defs: Record<string, unknown>;
  ops: Record<string, unknown>[];
}

/** Reads and checks the contract; throws if it is invalid. */
export function loadContract(dir?: string): Contract;

/** Every generated file (path relative to the repo root) → its contents as they should be. */
export function render(c?: Contract): Promise<Record<string, string>>;

/** The generated files (paths relative to the repo root) whose contents differ from what the contract says. */
export function stale(): Promise<string[]>;
