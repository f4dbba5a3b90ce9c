/**
 * External services that tests, benches and clusters need, started as real host processes on free
 * loopback ports in temporary directories and always stopped: etcd (Debian `etcd-server`) and NATS with
 * JetStream (Debian `nats-server`). ci/setup.sh installs both.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { tempDir, until } from './kernel.js';
import { allStopped } from './procs.js';

/** Where a program is, on PATH or in the sbin directories Debian puts daemons in (null when absent). */
export function which(cmd: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const d of dirs) {
    const f = path.join(d, cmd);
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return f;
    } catch {
      // next
    }
  }
  return null;
}

/** A TCP port nobody listens on right now (on `host`). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => res(port));
    });
    s.once('error', rej);
  });
}

/** Waits until something accepts on host:port; fails early when `exited` settles first. */
export async function waitForPort(
  port: number,
  timeoutMs: number,
  exited: Promise<unknown>,
  host = '127.0.0.1',
): Promise<void> {
  let dead = false;
  void exited.then(() => (dead = true));
  await until(
    async () => {
      if (dead) throw new Error(`server for ${host}:${port} exited`);
      return new Promise<boolean>((res) => {
        const s = net.connect(port, host, () => (s.destroy(), res(true)));
        s.once('error', () => res(false));
      });
    },
    timeoutMs,
    `${host}:${port} to accept`,
  );
}

export interface ServiceProcess {
  /** e.g. `http://127.0.0.1:2379` for etcd, `nats://127.0.0.1:4222` for NATS. */
  url: string;
  host: string;
  port: number;
  child: ChildProcess;
  dir: string;
  /** Its stderr/stdout, last 8 KiB (for failure messages). */
  log(): string;
  /** SIGSTOP / SIGCONT: a hung server; pause resolves once every thread of it is stopped. */
  pause(): Promise<void>;
  resume(): void;
  /** Stops it (SIGTERM, SIGKILL after 5 s) and starts it again on the same port with the same data: an outage of the service. */
  restart(): Promise<void>;
  /** Stops it and removes its directory (idempotent). */
  stop(): Promise<void>;
}

async function startService(
  what: string,
  exe: string,
  args: (dir: string, port: number) => string[],
  url: (port: number) => string,
  host: string,
  port?: number,
): Promise<ServiceProcess> {
  const dir = tempDir(`clv${what}`);
  const p = port ?? (await freePort(host));
  let log = '';
  const keep = (d: Buffer) => (log = (log + d.toString()).slice(-8192));
  // One run of the server: a restart is a second run with the same arguments (same port, same data).
  const run = async () => {
    const child = spawn(exe, args(dir, p), { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const exited = new Promise<void>((res) => child.once('exit', () => res()));
    try {
      await waitForPort(p, 20_000, exited, host);
    } catch (e) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start: ${(e as Error).message}\n${log}`);
    }
    return { child, exited };
  };
  const halt = async (r: { child: ChildProcess; exited: Promise<void> }) => {
    if (r.child.exitCode !== null || r.child.signalCode !== null) return;
    r.child.kill('SIGCONT');
    r.child.kill('SIGTERM');
    const t = setTimeout(() => r.child.kill('SIGKILL'), 5000);
    await r.exited;
    clearTimeout(t);
  };
  let cur: Awaited<ReturnType<typeof run>>;
  try {
    cur = await run();
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  let stopped = false;
  const svc: ServiceProcess = {
    url: url(p),
    host,
    port: p,
    child: cur.child,
    dir,
    log: () => log,
    pause: async () => {
      cur.child.kill('SIGSTOP');
      await until(() => allStopped(cur.child.pid!), 5000, `${what} stopped (SIGSTOP)`);
    },
    resume: () => cur.child.kill('SIGCONT'),
    restart: async () => {
      if (stopped) throw new Error(`${what} was stopped: it cannot restart`);
      await halt(cur);
      cur = await run();
      svc.child = cur.child;
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await halt(cur);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return svc;
}

/**
 * A single-member etcd (Debian's etcd 3.4) on `host`; data in a temporary directory. A restart of "the
 * same" etcd: start it again with the `port`, `peerPort` and a `dataDir` of your own (kept by stop();
 * you remove it).
 */
export async function startEtcd(
  opts: { host?: string; port?: number; peerPort?: number; dataDir?: string } = {},
): Promise<ServiceProcess> {
  const exe = which('etcd');
  if (!exe) throw new Error('etcd is not installed (ci/setup.sh installs etcd-server)');
  const host = opts.host ?? '127.0.0.1';
  const peerPort = opts.peerPort ?? (await freePort(host));
  return startService(
    'etcd',
    exe,
    (dir, port) => [
      '--name',
      'clove-test',
      '--data-dir',
      opts.dataDir ?? path.join(dir, 'data'),
      '--listen-client-urls',
      `http://${host}:${port}`,
      '--advertise-client-urls',
      `http://${host}:${port}`,
      '--listen-peer-urls',
      `http://${host}:${peerPort}`,
      '--initial-advertise-peer-urls',
      `http://${host}:${peerPort}`,
      '--initial-cluster',
      `clove-test=http://${host}:${peerPort}`,
      '--log-level',
      'warn',
      '--logger',
      'zap',
    ],
    (port) => `http://${host}:${port}`,
    host,
    opts.port,
  );
}

/**
 * nats-server with JetStream (file storage in a temporary directory) on `host`. A restart of "the same"
 * server: start it again with the `port` and a `storeDir` of your own (kept by stop(); you remove it).
 * `maxPayload` (default 8 MiB, NATS's own default is 1 MiB) must hold a kernel's largest message in its
 * bus envelope (docs/cluster.md).
 */
export async function startNats(
  opts: {
    host?: string;
    port?: number;
    storeDir?: string;
    maxPayload?: number;
    /** Clients must log in with this user and password (`nats://user:password@host:port`). */
    auth?: { user: string; password: string };
  } = {},
): Promise<ServiceProcess> {
  const exe = which('nats-server');
  if (!exe) throw new Error('nats-server is not installed (ci/setup.sh installs it)');
  const host = opts.host ?? '127.0.0.1';
  return startService(
    'nats',
    exe,
    (dir, port) => {
      const conf = path.join(dir, 'nats.conf');
      const auth = opts.auth
        ? `authorization {\n  user: ${JSON.stringify(opts.auth.user)}\n  password: ${JSON.stringify(opts.auth.password)}\n}\n`
        : '';
      fs.writeFileSync(conf, `max_payload: ${opts.maxPayload ?? 8 * 1024 * 1024}\n${auth}`);
      return [
        '-c',
        conf,
        '-a',
        host,
        '-p',
        String(port),
        '-js',
        '-sd',
        opts.storeDir ?? path.join(dir, 'js'),
      ];
    },
    (port) => `nats://${host}:${port}`,
    host,
    opts.port,
  );
}
