/**
 * A framework entry point (`module:attr`) as the argv and environment of an agent: the Python SDK's generic
 * runner (`python -m clove_sdk.integrations.run module:attr`, sdk/python/clove_sdk/integrations/run.py)
 * imports the object from a directory on PYTHONPATH and serves it over SEND/RECV. Shared by
 * `clove run --entry` and clove.yaml's `entry:`.
 */
import { execFileSync } from 'node:child_process';

/** The runner module the kernel finds through the PYTHONPATH it gives every agent (sdk/python). */
export const ENTRY_RUNNER = 'clove_sdk.integrations.run';
/** `module:attr`, module and attr dotted Python names. */
export const ENTRY_PATTERN =
  '^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*$';
const ENTRY_RE = new RegExp(ENTRY_PATTERN);

/** Null when `entry` is a valid `module:attr`, else what is wrong with it. */
export function entryProblem(entry: string): string | null {
  return ENTRY_RE.test(entry)
    ? null
    : `must be module:attr with Python names, e.g. my_graph:graph (got ${JSON.stringify(entry)})`;
}

let resolved: string | undefined;

/**
 * The interpreter an entry runs with when none is given: $CLOVE_PYTHON, else the real executable behind
 * `python3` (asked once: a pyenv shim on PATH would not run inside the sandbox), else `python3`.
 */
export function defaultPython(): string {
  if (process.env.CLOVE_PYTHON) return process.env.CLOVE_PYTHON;
  if (resolved === undefined) {
    try {
      resolved =
        execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], {
          encoding: 'utf8',
          timeout: 10_000,
          stdio: ['ignore', 'pipe', 'ignore'],
        }).trim() || 'python3';
    } catch {
      resolved = 'python3';
    }
  }
  return resolved;
}

/**
 * The SPAWN fields of an entry: `command` runs the runner with `python`, and PYTHONPATH gets `moduleDir`
 * (where `module` is found) ahead of any PYTHONPATH already in `env`. The kernel adds the SDK's own
 * directory to PYTHONPATH for every agent.
 */
export function entrySpawn(
  entry: string,
  python: string,
  moduleDir: string,
  env: Record<string, string> = {},
): { command: string[]; env: Record<string, string> } {
  const pythonPath = env.PYTHONPATH ? `${moduleDir}:${env.PYTHONPATH}` : moduleDir;
  return { command: [python, '-m', ENTRY_RUNNER, entry], env: { ...env, PYTHONPATH: pythonPath } };
}
