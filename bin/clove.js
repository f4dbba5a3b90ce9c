#!/usr/bin/env node
// The `clove` command: runs the compiled CLI (npm run build writes dist/).
import { main } from '../dist/kernel/cli/main.js';

const code = await main(process.argv);
// `clove kernel` and `clove logs -f` keep running until a signal; everything else exits with its code.
process.exitCode = code;
