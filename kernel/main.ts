/**
 * The daemon entry: runs a kernel in the foreground until SIGTERM or SIGINT. The `clove` command
 * (cli/) reaches it only through bin/clove.js, which hands it to the CLI as its `daemon`.
 */
import type pino from 'pino';
import pretty from 'pino-pretty';
import {
  clusterOptions,
  defaultOptions,
  httpOption,
  REPO_ROOT,
  type ClusterFlags,
  type KernelOptions,
} from './config.js';
import { KernelStartError } from './core/errors.js';
import { takeOver } from './core/handover.js';
import { Kernel } from './kernel.js';

export { defaultOptions, REPO_ROOT };
export { KERNEL_VERSION } from './version.js';
export type { KernelOptions };

export interface RunningKernel {
  socketPath: string;
  log(msg: string, fields?: Record<string, unknown>): void;
}

export type LogFormat = 'auto' | 'pretty' | 'json';

/**
 * The kernel's log stream: on a terminal (or asked) human-readable lines — time, level, agent, message,
 * in colour — through pino-pretty, synchronously like the JSON default; JSON (undefined) otherwise.
 */
export function logStream(format: LogFormat = 'auto'): pino.DestinationStream | undefined {
  const isTty = process.stderr.isTTY === true;
  if (format === 'json' || (format === 'auto' && !isTty)) return undefined;
  return pretty({
    destination: 2,
    sync: true,
    colorize: isTty,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,svc,agent',
    messageFormat: '{if agent}{agent}: {end}{msg}',
    singleLine: true,
  });
}

/**
 * Starts the kernel; returns its exit code once it stopped (0), or at once when it could not start
 * (the KernelStartError's code, docs/cli.md). `afterStart` runs once it accepts connections.
 */
export async function runKernel(
  options: Partial<KernelOptions> & {
    logFormat?: LogFormat;
    clusterFlags?: ClusterFlags;
    httpFlag?: string;
    /** Take over from the kernel running on this socket (SIGHUP hand-over, docs/restart.md). */
    upgrade?: boolean;
  },
  afterStart?: (k: RunningKernel) => Promise<void>,
): Promise<number> {
  let kernel: Kernel;
  try {
    const { logFormat, clusterFlags, httpFlag, upgrade, ...opts } = options;
    // `clove kernel --upgrade`: the running kernel hands its agents over and exits first.
    if (upgrade) await takeOver(opts.socketPath ?? defaultOptions().socketPath);
    const cluster = clusterFlags ? clusterOptions(clusterFlags) : undefined;
    const http = httpOption(httpFlag);
    kernel = new Kernel(
      defaultOptions({ ...opts, ...(cluster ? { cluster } : {}), ...(http ? { http } : {}) }),
      logStream(logFormat),
    );
    await kernel.start();
  } catch (e) {
    if (e instanceof KernelStartError) {
      process.stderr.write(`clove: ${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
  // One client must never take the kernel down: a bug that escapes a handler is logged, not fatal.
  process.on('uncaughtException', (err) =>
    kernel.log.error({ err }, 'uncaught exception (kernel keeps running)'),
  );
  process.on('unhandledRejection', (err) =>
    kernel.log.error({ err }, 'unhandled rejection (kernel keeps running)'),
  );
  let stopping = false;
  const done = new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      kernel.log.info({ signal: sig }, 'stopping: agents get SIGTERM, then SIGKILL after the grace period');
      kernel.close().then(() => resolve(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // A hand-over (docs/restart.md): the agents keep running; the next kernel re-adopts them.
    process.on('SIGHUP', () => {
      if (stopping) return;
      stopping = true;
      kernel.log.info({ signal: 'SIGHUP' }, 'handing over: agents keep running for the next kernel');
      void kernel.detach().then(() => {
        resolve(0);
        // Watched agent processes hold the event loop (the addon's reaper): this process is done.
        setImmediate(() => process.exit(0));
      });
    });
  });
  if (afterStart)
    await afterStart({
      socketPath: kernel.opts.socketPath,
      log: (msg, fields) => kernel.log.info(fields ?? {}, msg),
    });
  return done;
}
