#!/usr/bin/env node
// Builds the native addon (native/build/Release/clove_native.node) and the agent init helper
// (native/build/Release/clove-init) with node-gyp against the headers of the *running* node:
// node-gyp cannot download headers on our machines, so --nodedir must point at the install prefix.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const nodedir = path.dirname(path.dirname(process.execPath)); // /usr/bin/node -> /usr
const commonGypi = path.join(nodedir, 'include', 'node', 'common.gypi');
if (!existsSync(commonGypi)) {
  console.error(
    `build:native: ${commonGypi} not found; install the node headers for ${process.execPath} (Debian: libnode-dev / nodejs headers)`,
  );
  process.exit(1);
}
const require = createRequire(import.meta.url);
const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const args = [gyp, 'rebuild', `--nodedir=${nodedir}`, '--jobs=2', ...process.argv.slice(2)];
const res = spawnSync(process.execPath, args, { cwd: here, stdio: 'inherit' });
if (res.error) throw res.error;
process.exit(res.status ?? 1);
