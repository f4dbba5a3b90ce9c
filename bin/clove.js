#!/usr/bin/env node
// The `clove` command: the composition root of the compiled CLI (a client) and the kernel daemon
// (npm run build writes dist/). The CLI never imports the kernel; it is handed the daemon here.
import { main } from '../dist/cli/main.js';
import { defaultOptions, KERNEL_VERSION, REPO_ROOT, runKernel } from '../dist/kernel/main.js';

const daemon = {
  defaults: () => {
    const d = defaultOptions();
    return { dataDir: d.dataDir, mailboxSize: d.mailboxSize, version: KERNEL_VERSION, installDir: REPO_ROOT };
  },
  run: (options, afterStart) => runKernel(options, afterStart),
  // Loaded only for `clove relay`: the relay's module is not the kernel's.
  relay: {
    run: async (o) => (await import('../dist/kernel/relay/main.js')).runRelay(o),
    tokens: async (dir) => (await import('../dist/kernel/relay/main.js')).relayTokens(dir),
  },
};
const code = await main(process.argv, daemon);
// `clove kernel` and `clove logs -f` keep running until a signal; everything else exits with its code.
process.exitCode = code;
