/**
 * `clove world …` (docs/cli.md, docs/worlds.md): an operator's worlds — create from a YAML (or JSON)
 * file, list, state, inject or clear chaos, snapshot to a file, restore from one, destroy, and move an
 * agent in or out. Every verb is one WORLD_* call; the kernel checks everything the file says.
 */
import fs from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import YAML from 'yaml';
import { CliError, EXIT, resolveAgent, table, withClient } from '../lib.js';
import type { CommandContext } from './logs.js';

/** A `key=value` of `--param`: numbers and booleans as such, anything else a string. */
function param(v: string, acc: Record<string, unknown> = {}): Record<string, unknown> {
  const i = v.indexOf('=');
  if (i <= 0) throw new InvalidArgumentError('must be KEY=VALUE');
  const raw = v.slice(i + 1);
  let value: unknown = raw;
  if (raw !== '' && Number.isFinite(Number(raw))) value = Number(raw);
  else if (raw === 'true' || raw === 'false') value = raw === 'true';
  return { ...acc, [v.slice(0, i)]: value };
}

/** Reads a world file: YAML (JSON is YAML too) holding a §3.11 config object. */
function readConfig(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read ${file}: ${(e as Error).message}`, EXIT.USAGE);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) throw new CliError(`${file}: ${doc.errors[0].message}`, EXIT.USAGE);
  const v = doc.toJS() as unknown;
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new CliError(
      `${file}: a world file is a mapping (name, virtual_filesystem, network, chaos, …)`,
      EXIT.USAGE,
    );
  return v as Record<string, unknown>;
}

export function register(p: Command, ctx: CommandContext): void {
  const w = p
    .command('world')
    .description('simulated worlds: virtual files, mocked network, chaos (docs/worlds.md)');
  const socket = () => ctx.socket();

  w.command('create')
    .description('create a world from a YAML or JSON file')
    .requiredOption('-f, --file <file>', 'the world file (config of docs/worlds.md)')
    .option('-n, --name <name>', 'its name (default: `name` in the file)')
    .option('--json', 'print the reply as JSON')
    .action(async (o) => {
      const config = readConfig(o.file);
      const name =
        (o.name as string | undefined) ?? (typeof config.name === 'string' ? config.name : 'unnamed');
      const r = await withClient(socket(), (c) =>
        c.worldCreate({ name, config: { ...config, name } } as never),
      );
      console.log(o.json ? JSON.stringify(r) : `${r.world_id} (seed ${String(r.seed)})`);
    });

  w.command('ls')
    .description('list the worlds')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const r = await withClient(socket(), (c) => c.worldList());
      if (o.json) return console.log(JSON.stringify(r.worlds));
      const rows: (string | number)[][] = [['ID', 'NAME', 'AGENTS', 'CALLS', 'VFS', 'NET MOCK', 'CHAOS']];
      for (const x of r.worlds as Record<string, unknown>[])
        rows.push([
          String(x.id),
          String(x.name),
          Number(x.agent_count),
          Number(x.syscall_count),
          x.vfs_enabled ? 'yes' : 'no',
          x.network_mock_enabled ? 'yes' : 'no',
          x.chaos_enabled ? 'yes' : 'no',
        ]);
      console.log(table(rows));
    });

  w.command('state')
    .description("a world's state: metrics, seed, active chaos events, members")
    .argument('<world>', 'world id')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => {
      const r = await withClient(socket(), (c) => c.worldState({ world_id: id }));
      const s = r.state as Record<string, Record<string, unknown> | unknown>;
      if (o.json) return console.log(JSON.stringify(s));
      const chaos = s.chaos_metrics as Record<string, unknown>;
      console.log(`${String(s.world_id)} (${String(s.name)}), seed ${String(s.seed)}`);
      console.log(`  members: ${JSON.stringify(s.agents)}  calls: ${String(s.syscall_count)}`);
      console.log(`  files: ${JSON.stringify(s.vfs_metrics)}`);
      console.log(`  network: ${JSON.stringify(s.network_metrics)}`);
      console.log(`  exec: ${JSON.stringify(s.exec_metrics)}`);
      console.log(
        `  chaos: ${chaos.enabled ? 'on' : 'off'}, ${String(chaos.failures_injected)} failures, ` +
          `${String(chaos.latency_injected)} ms latency injected`,
      );
      for (const e of chaos.active_events as Record<string, unknown>[])
        console.log(
          `    #${String(e.id)} ${String(e.type)} ${JSON.stringify(e.params)}` +
            (e.expires_at ? ` until ${new Date(Number(e.expires_at)).toISOString()}` : ' until cleared'),
        );
    });

  w.command('event')
    .description('inject a chaos event (or `clear`; --clear removes the active events of that type)')
    .argument('<world>', 'world id')
    .argument(
      '<type>',
      'disk_full, disk_fail, network_partition, slow_io, latency_spike, packet_loss, agent_crash, resource_pressure, clear',
    )
    .option(
      '-p, --param <KEY=VALUE>',
      'duration_ms, probability, latency_ms, target, … (repeatable)',
      param,
      {},
    )
    .option('--clear', 'remove the active events of this type')
    .option('--json', 'print the reply as JSON')
    .action(async (id: string, type: string, o) => {
      const r = await withClient(socket(), (c) =>
        c.worldEvent({
          world_id: id,
          event_type: type,
          params: o.param,
          ...(o.clear ? { clear: true } : {}),
        }),
      );
      if (o.json) return console.log(JSON.stringify(r));
      if (r.cleared !== undefined) console.log(`cleared ${r.cleared} event(s) in ${id}`);
      else if (r.affected) console.log(`${type}: killed ${JSON.stringify(r.affected)}`);
      else console.log(`${type} #${String(r.event_id)} in ${id}`);
    });

  w.command('snapshot')
    .description("write a world's snapshot (files, mocks, recordings, chaos and PRNG state, members) as JSON")
    .argument('<world>', 'world id')
    .option('-o, --output <file>', 'the file (default: standard output)')
    .action(async (id: string, o) => {
      const r = await withClient(socket(), (c) => c.worldSnapshot({ world_id: id }));
      const text = JSON.stringify(r.snapshot, null, 2) + '\n';
      if (o.output) fs.writeFileSync(o.output, text, { mode: 0o600 });
      else process.stdout.write(text);
    });

  w.command('restore')
    .description(
      'create a world from a snapshot file; its members come back only if they exist and are in no world',
    )
    .argument('<file>', 'a snapshot written by `clove world snapshot`')
    .option('--id <id>', 'the new world id (default: generated from its name)')
    .option('--json', 'print the reply as JSON')
    .action(async (file: string, o) => {
      const snapshot = readConfig(file);
      const r = await withClient(socket(), (c) =>
        c.worldRestore({ snapshot, ...(o.id ? { new_world_id: o.id } : {}) }),
      );
      if (o.json) return console.log(JSON.stringify(r));
      console.log(`${r.world_id}: members restored ${JSON.stringify(r.members_restored ?? [])}`);
      if (r.members_dropped?.length) console.log(`  left out: ${r.members_dropped.join(', ')}`);
    });

  w.command('destroy')
    .description('destroy a world (--force: also when it has members, who leave it)')
    .argument('<world>', 'world id')
    .option('--force', 'destroy it even with members')
    .action(async (id: string, o) => {
      await withClient(socket(), (c) => c.worldDestroy({ world_id: id, force: o.force === true }));
      console.log(`destroyed ${id}`);
    });

  w.command('join')
    .description('put an agent in a world')
    .argument('<world>', 'world id')
    .argument('<agent>', 'name or id')
    .action(async (id: string, a: string) => {
      await withClient(socket(), async (c) =>
        c.worldJoin({ world_id: id, agent_id: await resolveAgent(c, a) }),
      );
      console.log(`${a} is in ${id}`);
    });

  w.command('leave')
    .description('take an agent out of its world')
    .argument('<agent>', 'name or id')
    .action(async (a: string) => {
      const r = await withClient(socket(), async (c) => c.worldLeave({ agent_id: await resolveAgent(c, a) }));
      console.log(`${a} left ${String(r.world_id)}`);
    });
}
