/**
 * The relay's entry for the `clove` command (bin/clove.js hands it to the CLI, which never imports the
 * kernel): `clove relay` runs one in the foreground until SIGTERM or SIGINT; `clove relay token …`
 * manages its token file.
 */
import pino from 'pino';
import { logStream, type LogFormat } from '../main.js';
import { mountDashboard } from '../http/static.js';
import { Relay } from './server.js';
import { TokenError, TokenStore, type TokenEntry } from './tokens.js';

export interface RelayRunOptions {
  host: string;
  port: number;
  dataDir: string;
  requestTimeoutMs?: number;
  logLevel?: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  logFormat?: LogFormat;
}

/** Runs a relay until a signal; resolves with the exit code (2: it could not start). */
export async function runRelay(o: RelayRunOptions): Promise<number> {
  const log = pino(
    { level: o.logLevel ?? 'info', base: { svc: 'clove-relay' } },
    logStream(o.logFormat) ?? pino.destination({ dest: 2, sync: true }),
  );
  let relay: Relay;
  try {
    relay = new Relay({
      host: o.host,
      port: o.port,
      dataDir: o.dataDir,
      ...(o.requestTimeoutMs ? { requestTimeoutMs: o.requestTimeoutMs } : {}),
      mountStatic: (app) => mountDashboard(app),
      log,
    });
    await relay.start();
  } catch (e) {
    process.stderr.write(`clove: cannot start the relay on ${o.host}:${o.port}: ${(e as Error).message}\n`);
    return 2;
  }
  // One kernel or user must never take the relay down: a bug that escapes a handler is logged.
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception (relay keeps running)'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection (relay keeps running)'));
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'relay stopping');
      void relay.close().then(() => resolve(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

/** `clove relay token add|list|revoke` on a relay's data dir (works beside a running relay). */
export function relayTokens(dataDir: string): {
  add(kind: 'machine' | 'user', name: string, machines?: string[]): { token: string; entry: TokenEntry };
  list(): TokenEntry[];
  revoke(which: string): number;
} {
  const store = new TokenStore(dataDir);
  return {
    add: (kind, name, machines) => store.add(kind, name, machines),
    list: () => store.list(),
    revoke: (which) => store.revoke(which),
  };
}

export { TokenError };
