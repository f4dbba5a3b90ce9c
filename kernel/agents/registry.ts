/**
 * Agent identities and definitions, persisted (docs/protocol.md §2 "An agent's identity and its name").
 *
 * An identity is `<name>#<serial>`: the serial comes from a per-name counter that only ever grows, so
 * an identity is never issued twice in the life of a data dir. It starts when an agent is spawned under
 * a name that has no live identity and ends when that agent is gone for good; it outlives the agent's
 * restarts and the kernel's. A live identity's row also holds the definition of its agent (what the
 * supervisor was given), so that a kernel started again on the same data dir can start the agent again.
 *
 * Storage: two tables of their own in `<data-dir>/state.db`, through a connection of their own (WAL lets
 * it live beside the state store's). The same file on purpose: agent-scope keys are namespaced by
 * identity, so identities, serials and keys must be backed up, copied and restored together — an
 * identities file restored apart from its state.db could hand out a serial again, and with it another
 * agent's keys.
 */
import type Database from 'better-sqlite3';
import { StorageError } from '../core/errors.js';
import type { SpawnArgs } from '../../protocol/index.js';
import type { Permissions } from '../perms/permissions.js';
import { openDatabase } from '../state/sqlite.js';
import type { AgentDef } from '../supervisor/supervisor.js';
import type { Account } from '../sandbox/types.js';

/** Who started an identity: an operator, a client, or an agent (its parent's identity, `<name>#<serial>`). */
export type SpawnedBy = 'operator' | 'client' | string;

/** What is persisted of an agent (JSON in `agent_identity.definition`), version 1. */
export interface PersistedAgent extends Pick<
  AgentDef,
  'name' | 'identity' | 'argv' | 'env' | 'cwd' | 'sandboxed' | 'network' | 'limits' | 'policy'
> {
  v: 1;
  share: string[];
  /** Per-agent budgets; null stands for an unlimited one (JSON has no Infinity). */
  budgets: Record<string, number | null>;
  rights: Permissions;
  /** The uid/gid it last ran as (null: the kernel's): its work directory is re-owned to its next uid. */
  account: Account | null;
  /** SPAWN `labels` (absent in definitions written before labels existed). */
  labels?: Record<string, string>;
  /** SPAWN `durable` (absent in definitions written before it existed: false). */
  durable?: boolean;
  /** SPAWN `standby` (docs/supervision.md "Warm standby"). */
  standby?: number;
  /** SPAWN `spare: false` (docs/supervision.md "Spare sandbox"); absent: true. */
  spare?: boolean;
  /** The SPAWN request as run (absent in definitions written before it was kept): a scaled service's template. */
  request?: SpawnArgs;
}

/** A live identity. */
export interface IdentityRow {
  identity: string;
  name: string;
  serial: number;
  spawnedBy: SpawnedBy;
  createdAt: number;
  /** Null until its agent's first start succeeded. */
  definition: PersistedAgent | null;
  /** Host pid and start time (/proc/<pid>/stat field 22) of its agent's latest process. */
  pid: number | null;
  pidStart: string | null;
  /**
   * The numeric agent id its latest process ran under (null: before ids were kept). A re-adopted agent
   * keeps it (docs/restart.md), so peers that address it by id still reach it.
   */
  agentId: number | null;
  /** Names its agent took with REGISTER (besides its own): they come back with it after a kernel restart. */
  names: string[];
  /** Event topics its agent SUBSCRIBEd to: they come back with it after a kernel restart. */
  topics: string[];
}

interface Raw {
  identity: string;
  name: string;
  serial: number;
  spawned_by: string;
  created_at: number;
  definition: string | null;
  pid: number | null;
  pid_start: string | null;
  agent_id?: number | null;
  names?: string | null;
  topics?: string | null;
}

export interface RegistryOptions {
  /** `<data-dir>/state.db`. */
  path: string;
  durability?: 'normal' | 'full';
}

/** `<name>#<serial>`; `#` is not allowed in names, so an identity is never mistaken for a name. */
export function identityOf(name: string, serial: number): string {
  return `${name}#${serial}`;
}

export class IdentityRegistry {
  private readonly db: Database.Database;
  private readonly stmts: Record<string, Database.Statement>;
  /** Live identities by name (at most one per name); a cache of the table, which stays small. */
  private readonly byName = new Map<string, IdentityRow>();

  constructor(opts: RegistryOptions) {
    try {
      this.db = openDatabase(opts.path, opts.durability);
      this.db.exec(`CREATE TABLE IF NOT EXISTS agent_serial (
        name TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID`);
      this.db.exec(`CREATE TABLE IF NOT EXISTS agent_identity (
        identity TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, serial INTEGER NOT NULL,
        spawned_by TEXT NOT NULL, created_at INTEGER NOT NULL, definition TEXT,
        pid INTEGER, pid_start TEXT) WITHOUT ROWID`);
      // Added after the table existed: a data dir of an older kernel has no agent_id column yet.
      const cols = this.db.prepare('PRAGMA table_info(agent_identity)').all() as { name: string }[];
      if (!cols.some((c) => c.name === 'agent_id'))
        this.db.exec('ALTER TABLE agent_identity ADD COLUMN agent_id INTEGER');
      if (!cols.some((c) => c.name === 'names'))
        this.db.exec('ALTER TABLE agent_identity ADD COLUMN names TEXT');
      if (!cols.some((c) => c.name === 'topics'))
        this.db.exec('ALTER TABLE agent_identity ADD COLUMN topics TEXT');
      this.stmts = {
        serial: this.db.prepare(`INSERT INTO agent_serial (name, last) VALUES (?, 1)
          ON CONFLICT (name) DO UPDATE SET last = last + 1 RETURNING last`),
        insert: this.db.prepare(`INSERT INTO agent_identity (identity, name, serial, spawned_by, created_at)
          VALUES (@identity, @name, @serial, @spawned_by, @created_at)`),
        define: this.db.prepare(
          'UPDATE agent_identity SET definition = ?, spawned_by = ? WHERE identity = ?',
        ),
        pid: this.db.prepare(
          'UPDATE agent_identity SET pid = ?, pid_start = ?, agent_id = ? WHERE identity = ?',
        ),
        end: this.db.prepare('DELETE FROM agent_identity WHERE identity = ?'),
        names: this.db.prepare('UPDATE agent_identity SET names = ? WHERE identity = ?'),
        topics: this.db.prepare('UPDATE agent_identity SET topics = ? WHERE identity = ?'),
        all: this.db.prepare('SELECT * FROM agent_identity ORDER BY created_at, serial, name'),
      };
      for (const r of this.stmts.all.all() as Raw[]) this.byName.set(r.name, fromRaw(r));
    } catch (e) {
      throw new StorageError(`cannot open the agent registry at ${opts.path}: ${(e as Error).message}`);
    }
  }

  private run<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw new StorageError(`failed to ${what}: ${(e as Error).message}`);
    }
  }

  /** The live identity of a name, if any. */
  live(name: string): IdentityRow | undefined {
    return this.byName.get(name);
  }

  /** Every live identity, oldest first (a parent's before its children's). */
  all(): IdentityRow[] {
    return [...this.byName.values()].sort(
      (a, b) => a.createdAt - b.createdAt || a.serial - b.serial || a.name.localeCompare(b.name),
    );
  }

  /** Starts a new identity for `name` (which must have none): the next serial of the name. */
  begin(name: string, spawnedBy: SpawnedBy): IdentityRow {
    if (this.byName.has(name)) throw new StorageError(`name ${name} already has a live identity`);
    return this.run('start an identity', () =>
      this.db.transaction(() => {
        const serial = (this.stmts.serial.get(name) as { last: number }).last;
        const row: IdentityRow = {
          identity: identityOf(name, serial),
          name,
          serial,
          spawnedBy,
          createdAt: Date.now(),
          definition: null,
          pid: null,
          pidStart: null,
          agentId: null,
          names: [],
          topics: [],
        };
        this.stmts.insert.run({
          identity: row.identity,
          name,
          serial,
          spawned_by: spawnedBy,
          created_at: row.createdAt,
        });
        this.byName.set(name, row);
        return row;
      })(),
    );
  }

  /** Records (replaces) the definition of an identity's agent, and who spawned it. */
  define(row: IdentityRow, def: PersistedAgent, spawnedBy: SpawnedBy): void {
    this.run('persist an agent', () => this.stmts.define.run(JSON.stringify(def), spawnedBy, row.identity));
    row.definition = def;
    row.spawnedBy = spawnedBy;
  }

  /** Records the host pid (and its start time) of the identity's current process, and its agent id. */
  setPid(row: IdentityRow, pid: number, start: string | null, agentId: number): void {
    this.run('record a pid', () => this.stmts.pid.run(pid, start, agentId, row.identity));
    row.pid = pid;
    row.pidStart = start;
    row.agentId = agentId;
  }

  /** Records a name the identity's agent REGISTERed (once). */
  addName(row: IdentityRow, name: string): void {
    if (row.names.includes(name)) return;
    const names = [...row.names, name];
    this.run('record a name', () => this.stmts.names.run(JSON.stringify(names), row.identity));
    row.names = names;
  }

  /** Records the event topics the identity's agent is subscribed to (all of them). */
  setTopics(row: IdentityRow, topics: string[]): void {
    this.run('record subscriptions', () => this.stmts.topics.run(JSON.stringify(topics), row.identity));
    row.topics = [...topics];
  }

  /** Ends an identity: its row goes (its serial is never issued again). */
  end(row: IdentityRow): void {
    this.run('end an identity', () => this.stmts.end.run(row.identity));
    if (this.byName.get(row.name) === row) this.byName.delete(row.name);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function fromRaw(r: Raw): IdentityRow {
  let definition: PersistedAgent | null = null;
  if (r.definition) {
    try {
      definition = JSON.parse(r.definition) as PersistedAgent;
    } catch {
      definition = null; // unreadable: the identity stays, its agent is not started again
    }
  }
  return {
    identity: r.identity,
    name: r.name,
    serial: r.serial,
    spawnedBy: r.spawned_by,
    createdAt: r.created_at,
    definition,
    pid: r.pid,
    pidStart: r.pid_start,
    agentId: r.agent_id ?? null,
    names: namesOf(r.names),
    topics: namesOf(r.topics),
  };
}

function namesOf(text: string | null | undefined): string[] {
  try {
    const v: unknown = text ? JSON.parse(text) : [];
    return Array.isArray(v) ? v.filter((n): n is string => typeof n === 'string') : [];
  } catch {
    return [];
  }
}
