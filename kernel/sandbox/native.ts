/**
 * Loader of the native addon. Works from the sources (vitest runs kernel/sandbox/*.ts) and from the
 * compiled output (dist/kernel/sandbox/*.js) by walking up to the directory holding package.json.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CloveNative } from '../../native/index.js';
import { NativeUnavailableError } from './errors.js';

let cached: { addon?: CloveNative; error?: Error } | undefined;

/** The repository root: the first ancestor of this file that holds package.json and native/. */
export function projectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'native'))) return dir;
    const up = path.dirname(dir);
    if (up === dir)
      throw new NativeUnavailableError(
        `no package.json with native/ above ${fileURLToPath(import.meta.url)}`,
      );
    dir = up;
  }
}

/** Directory of the built artefacts (clove_native.node, clove-init); CLOVE_NATIVE_DIR overrides. */
export function nativeBuildDir(): string {
  return process.env.CLOVE_NATIVE_DIR ?? path.join(projectRoot(), 'native', 'build', 'Release');
}

/** Path of the clove-init helper exec'd as PID 1 of each agent. */
export function initHelperPath(): string {
  return path.join(nativeBuildDir(), 'clove-init');
}

function tryLoad(): { addon?: CloveNative; error?: Error } {
  if (cached) return cached;
  try {
    const file = path.join(nativeBuildDir(), 'clove_native.node');
    if (!existsSync(file)) {
      cached = { error: new NativeUnavailableError(`${file} not found: run \`npm run build:native\``) };
    } else {
      const require = createRequire(import.meta.url);
      cached = { addon: require(file) as CloveNative };
    }
  } catch (err) {
    cached = {
      error: new NativeUnavailableError(`cannot load clove_native.node: ${(err as Error).message}`, {
        cause: err,
      }),
    };
  }
  return cached;
}

/** The addon, or throws NativeUnavailableError. */
export function loadNative(): CloveNative {
  const r = tryLoad();
  if (r.addon) return r.addon;
  throw r.error ?? new NativeUnavailableError('clove_native unavailable');
}

/** True when the addon is built and loads (Linux only). */
export function nativeAvailable(): boolean {
  return process.platform === 'linux' && tryLoad().addon !== undefined;
}
