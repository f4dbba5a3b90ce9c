/**
 * `clove relay` (run a relay; manage its tokens) and `clove tunnel` (steer this kernel's tunnel to a
 * relay through the TUNNEL_* syscalls). docs/relay.md, docs/cli.md. The relay itself lives in
 * kernel/relay/; the CLI reaches it through the daemon bin/clove.js hands over.
 */
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Globals } from './compose.js';
import { CliError, EXIT, table, withClient } from '../lib.js';

/** A relay token's entry as `token list` shows it (never the token: only its hash is stored). */
export interface RelayTokenEntry {
  id: string;
  kind: 'machine' | 'user';
  name: string;
  machines?: string[];
  created_at: string;
}

/** What the CLI needs of the relay (bin/clove.js hands it over with the daemon). */
export interface RelayDaemon {
  run(o: {
    host: string;
    port: number;
    dataDir: string;
    requestTimeoutMs?: number;
    logLevel?: 'debug' | 'info' | 'warn' | 'error' | 'silent';
    logFormat?: 'auto' | 'pretty' | 'json';
  }): Promise<number>;
  tokens(dataDir: string): Promise<{
    add(
      kind: 'machine' | 'user',
      name: string,
      machines?: string[],
    ): { token: string; entry: RelayTokenEntry };
    list(): RelayTokenEntry[];
    revoke(which: string): number;
  }>;
}

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/;

function hostPort(v: string): { host: string; port: number } {
  const m = HOST_PORT.exec(v);
  if (!m || Number(m[2]) > 65535) throw new InvalidArgumentError('must be HOST:PORT, e.g. 0.0.0.0:7443');
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

function seconds(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a whole number of seconds ≥ 1');
  return n;
}

/**
 * The relay's data dir: `--data-dir` as given (before or after `relay`: commander hands it to whichever
 * command declares it first), else `relay/` under the default data dir.
 */
function relayDir(p: Command, o: { dataDir?: string }, g: Globals): string {
  const given = (o.dataDir ?? p.opts().dataDir) as string | undefined;
  return given ? path.resolve(given) : path.join(g.dataDir(), 'relay');
}

export function registerRelay(p: Command, g: Globals, relay: RelayDaemon | undefined): void {
  const need = (): RelayDaemon => {
    if (!relay) throw new CliError('this build of clove has no relay', EXIT.USAGE);
    return relay;
  };
  const r = p
    .command('relay')
    .description('run a relay that kernels dial out to and users reach them through (docs/relay.md)')
    .option('--listen <host:port>', 'where the relay listens (required to run it)', hostPort)
    .option('-d, --data-dir <dir>', 'tokens live here (default: <global data dir>/relay)')
    .option('--timeout <s>', 'seconds a forwarded request may take before 504', seconds, 30)
    .addOption(
      new Option('--log-level <level>', 'relay log level')
        .choices(['debug', 'info', 'warn', 'error', 'silent'])
        .default('info'),
    )
    .addOption(
      new Option('--log-format <format>', 'pretty (colours) on a terminal, else JSON')
        .choices(['auto', 'pretty', 'json'])
        .default('auto'),
    )
    .action(async (o) => {
      if (!o.listen) throw new CliError('clove relay needs --listen HOST:PORT', EXIT.USAGE);
      process.exitCode = await need().run({
        ...(o.listen as { host: string; port: number }),
        dataDir: relayDir(p, o, g),
        requestTimeoutMs: (o.timeout as number) * 1000,
        logLevel: o.logLevel,
        logFormat: o.logFormat,
      });
    });
  // `clove relay --data-dir D token …` and `clove relay token … --data-dir D` alike: the relay's option.
  const dir = () => relayDir(p, r.opts(), g);
  const tokens = new Command('token').description("manage the relay's machine and user tokens");
  tokens
    .command('add')
    .description('make a token and print it once (only its SHA-256 is kept)')
    .option('--machine <name>', 'a token a kernel dials in with (its --machine-id)')
    .option('--user <name>', 'a token a person or script calls the API with')
    .option('--machines <a,b>', 'user tokens: only these machines (default: every machine)')
    .option('--json', 'print JSON')
    .action(async (o) => {
      if (!!o.machine === !!o.user)
        throw new CliError('give one of --machine NAME or --user NAME', EXIT.USAGE);
      if (o.machines && !o.user) throw new CliError('--machines is for --user tokens', EXIT.USAGE);
      const store = await need().tokens(dir());
      const machines = o.machines
        ? String(o.machines)
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : undefined;
      let made: { token: string; entry: RelayTokenEntry };
      try {
        made = o.machine ? store.add('machine', o.machine) : store.add('user', o.user, machines);
      } catch (e) {
        throw new CliError((e as Error).message, EXIT.USAGE);
      }
      if (o.json) return console.log(JSON.stringify({ token: made.token, ...made.entry, hash: undefined }));
      console.log(made.token);
      process.stderr.write(
        `${made.entry.kind} token ${made.entry.id} for ${made.entry.name}: shown once, keep it secret\n`,
      );
    });
  tokens
    .command('list')
    .description('list tokens (ids, kinds, names; never the tokens)')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const list = (await need().tokens(dir())).list().map(({ id, kind, name, machines, created_at }) => ({
        id,
        kind,
        name,
        ...(machines ? { machines } : {}),
        created_at,
      }));
      if (o.json) return console.log(JSON.stringify(list));
      const rows: string[][] = [['ID', 'KIND', 'NAME', 'MACHINES', 'CREATED']];
      for (const e of list)
        rows.push([
          e.id,
          e.kind,
          e.name,
          e.kind === 'user' ? (e.machines?.join(',') ?? '*') : '',
          e.created_at,
        ]);
      console.log(table(rows));
    });
  tokens
    .command('revoke')
    .description('remove a token by id, or every token of machine:NAME / user:NAME; live tunnels close')
    .argument('<which>', 'token id, machine:NAME or user:NAME')
    .action(async (which: string) => {
      const n = (await need().tokens(dir())).revoke(which);
      if (!n) throw new CliError(`no token ${which}`, EXIT.NOT_FOUND);
      console.log(`revoked ${n} token${n === 1 ? '' : 's'}`);
    });
  r.addCommand(tokens);
}

export function registerTunnel(p: Command, g: Globals): void {
  const t = p.command('tunnel').description("this kernel's tunnel to a relay (operators; docs/relay.md)");
  t.command('connect')
    .description('dial a relay now (waits for its answer), and keep the tunnel up')
    .option('--relay <url>', 'ws(s):// or http(s):// URL of the relay')
    .option('--machine-id <id>', 'the machine name the token was made for')
    .option('--token <token>', 'the machine token (prefer --token-file)')
    .option('--token-file <file>', 'a file holding the machine token')
    .option('--reconnect-interval <s>', 'first reconnect delay, doubled up to 60 s', seconds)
    .action(async (o) => {
      let token = o.token as string | undefined;
      if (o.tokenFile) {
        const fs = await import('node:fs');
        try {
          token = fs.readFileSync(o.tokenFile, 'utf8').split('\n')[0]!.trim();
        } catch (e) {
          throw new CliError(`cannot read ${o.tokenFile}: ${(e as Error).message}`, EXIT.USAGE);
        }
      }
      const r = await withClient(g.socket(), async (c) => {
        if (o.reconnectInterval) await c.tunnelConfig({ reconnect_interval: o.reconnectInterval });
        return c.tunnelConnect({
          ...(o.relay ? { relay_url: o.relay } : {}),
          ...(o.machineId ? { machine_id: o.machineId } : {}),
          ...(token ? { token } : {}),
        });
      });
      console.log(`connected to ${r.relay_url} as ${r.machine_id}`);
    });
  t.command('disconnect')
    .description('close the tunnel and stop reconnecting')
    .action(async () => {
      await withClient(g.socket(), (c) => c.tunnelDisconnect());
      console.log('disconnected');
    });
  t.command('status')
    .description("the tunnel's state")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const s = (await withClient(g.socket(), (c) => c.tunnelStatus())) as unknown as Record<string, unknown>;
      if (o.json) return console.log(JSON.stringify(s));
      const rows: string[][] = [];
      for (const k of [
        'state',
        'relay_url',
        'machine_id',
        'connected_at',
        'reconnects',
        'remote_agent_count',
        'last_error',
      ])
        rows.push([k, String(s[k] ?? '-')]);
      console.log(table(rows));
    });
  t.command('remotes')
    .description('wire-protocol sessions opened through the relay')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const r = await withClient(g.socket(), (c) => c.tunnelListRemotes());
      if (o.json) return console.log(JSON.stringify(r.agents));
      const rows: (string | number)[][] = [['ID', 'NAME', 'USER', 'CONNECTED']];
      for (const a of r.agents) rows.push([a.agent_id, a.name, a.user ?? '', a.connected_at]);
      console.log(table(rows));
    });
}
