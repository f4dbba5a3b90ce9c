/**
 * The durable state store: SQLite in WAL mode. A write returns only after SQLite committed it, so a
 * STORE that got a success reply survives `kill -9` of the kernel (WAL + synchronous=NORMAL is durable
 * against process crashes; `durability: 'full'` also survives power loss).
 *
 * Namespaces: global and session keys share one namespace (as in the public kernel); agent keys live in
 * a namespace of their own per agent name, so an agent finds its state again after a restart and after
 * a kernel restart.
 */
import type Database from 'better-sqlite3';
import { openDatabase } from './sqlite.js';
import { StorageError, PermissionDeniedError, QuotaExceededError } from '../core/errors.js';
import { overBudget } from '../core/budgets.js';

export type Scope = 'global' | 'agent' | 'session';

export interface Entry {
  key: string;
  value: unknown;
  scope: Scope;
  owner: string;
}

export interface StoreOptions {
  path: string;
  durability?: 'normal' | 'full';
  sweepIntervalMs?: number;
}

const SHARED_NS = '';

export class StateStore {
  private db: Database.Database;
  private sweeper: NodeJS.Timeout;
  private stmts: Record<string, Database.Statement>;

  constructor(opts: StoreOptions) {
    try {
      this.db = openDatabase(opts.path, opts.durability);
      this.db.exec(`CREATE TABLE IF NOT EXISTS state (
        ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, scope TEXT NOT NULL,
        owner TEXT NOT NULL, expires_at INTEGER, updated_at INTEGER NOT NULL,
        PRIMARY KEY (ns, key)) WITHOUT ROWID`);
      this.db.exec(
        'CREATE INDEX IF NOT EXISTS state_expiry ON state (expires_at) WHERE expires_at IS NOT NULL',
      );
      // What each owner holds (keys, bytes of values), kept by triggers through every write, delete and
      // sweep, so that a budget check is one lookup; recounted at start in case an older kernel wrote.
      this.db.exec(`CREATE TABLE IF NOT EXISTS owners (
        owner TEXT PRIMARY KEY, keys INTEGER NOT NULL, bytes INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TRIGGER IF NOT EXISTS owners_ins AFTER INSERT ON state BEGIN
          INSERT INTO owners (owner, keys, bytes) VALUES (new.owner, 1, length(CAST(new.value AS BLOB)))
          ON CONFLICT (owner) DO UPDATE SET keys = keys + 1, bytes = bytes + length(CAST(new.value AS BLOB));
        END;
        CREATE TRIGGER IF NOT EXISTS owners_del AFTER DELETE ON state BEGIN
          UPDATE owners SET keys = keys - 1, bytes = bytes - length(CAST(old.value AS BLOB)) WHERE owner = old.owner;
        END;
        CREATE TRIGGER IF NOT EXISTS owners_upd AFTER UPDATE ON state BEGIN
          UPDATE owners SET keys = keys - 1, bytes = bytes - length(CAST(old.value AS BLOB)) WHERE owner = old.owner;
          INSERT INTO owners (owner, keys, bytes) VALUES (new.owner, 1, length(CAST(new.value AS BLOB)))
          ON CONFLICT (owner) DO UPDATE SET keys = keys + 1, bytes = bytes + length(CAST(new.value AS BLOB));
        END;`);
      // Session keys live as long as one kernel run.
      this.db.prepare("DELETE FROM state WHERE scope = 'session'").run();
      this.db.exec(`DELETE FROM owners;
        INSERT INTO owners SELECT owner, count(*), sum(length(CAST(value AS BLOB))) FROM state GROUP BY owner;`);
    } catch (e) {
      throw new StorageError(`cannot open state store at ${opts.path}: ${(e as Error).message}`);
    }
    this.stmts = {
      get: this.db.prepare('SELECT value, scope, owner, expires_at FROM state WHERE ns = ? AND key = ?'),
      put: this.db.prepare(`INSERT INTO state (ns, key, value, scope, owner, expires_at, updated_at)
        VALUES (@ns, @key, @value, @scope, @owner, @expires_at, @now)
        ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, scope = excluded.scope,
        owner = excluded.owner, expires_at = excluded.expires_at, updated_at = excluded.updated_at`),
      del: this.db.prepare('DELETE FROM state WHERE ns = ? AND key = ?'),
      keys: this.db.prepare(
        `SELECT DISTINCT key FROM state WHERE ns IN (?, '') AND (expires_at IS NULL OR expires_at > ?)
         AND substr(key, 1, length(?)) = ? AND key > ? ORDER BY key LIMIT ?`,
      ),
      owned: this.db.prepare('SELECT keys, bytes FROM owners WHERE owner = ?'),
      dropNs: this.db.prepare('DELETE FROM state WHERE ns = ?'),
      sweep: this.db.prepare('DELETE FROM state WHERE expires_at IS NOT NULL AND expires_at <= ?'),
    };
    this.sweeper = setInterval(() => this.sweep(), opts.sweepIntervalMs ?? 5000);
    this.sweeper.unref();
  }

  private static ns(scope: Scope, agentName: string): string {
    return scope === 'agent' ? `agent:${agentName}` : SHARED_NS;
  }

  private run<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (e instanceof PermissionDeniedError || e instanceof QuotaExceededError) throw e;
      throw new StorageError(`failed to ${what}: ${(e as Error).message}`);
    }
  }

  private read(
    ns: string,
    key: string,
    now: number,
  ): { value: string; scope: Scope; owner: string } | undefined {
    const row = this.stmts.get.get(ns, key) as
      { value: string; scope: Scope; owner: string; expires_at: number | null } | undefined;
    if (!row) return undefined;
    if (row.expires_at !== null && row.expires_at <= now) {
      this.stmts.del.run(ns, key);
      return undefined;
    }
    return row;
  }

  /**
   * Writes a key. In the shared namespace an existing key belongs to whoever created it: only its owner
   * (or an operator, `force`) may overwrite it. With `budget`, the owner may hold at most that many keys
   * and bytes of values (quota_exceeded, nothing written).
   */
  put(
    key: string,
    value: unknown,
    scope: Scope,
    owner: string,
    agentName: string,
    ttlSec: number | undefined,
    force: boolean,
    budget?: { keys: number; bytes: number },
  ): void {
    const now = Date.now();
    const ns = StateStore.ns(scope, agentName);
    const json = JSON.stringify(value ?? null);
    this.run('store key', () => {
      const tx = this.db.transaction(() => {
        const cur = this.read(ns, key, now);
        if (cur && ns === SHARED_NS && cur.owner !== owner && !force) {
          throw new PermissionDeniedError(`Permission denied: key '${key}' belongs to ${cur.owner}`);
        }
        if (budget) this.checkBudget(owner, cur?.owner === owner ? cur.value : undefined, json, budget);
        this.stmts.put.run({
          ns,
          key,
          value: json,
          scope,
          owner,
          expires_at: ttlSec === undefined ? null : now + Math.round(ttlSec * 1000),
          now,
        });
      });
      tx();
    });
  }

  /** Refuses a write that would take `owner` past its budget; `replaced` is the value it overwrites, if its own. */
  private checkBudget(
    owner: string,
    replaced: string | undefined,
    json: string,
    budget: { keys: number; bytes: number },
  ): void {
    const held = (this.stmts.owned.get(owner) as { keys: number; bytes: number } | undefined) ?? {
      keys: 0,
      bytes: 0,
    };
    const keys = held.keys + (replaced === undefined ? 1 : 0);
    const bytes =
      held.bytes + Buffer.byteLength(json) - (replaced === undefined ? 0 : Buffer.byteLength(replaced));
    if (keys > budget.keys) overBudget('state_keys', held.keys, budget.keys, 'too many state keys');
    if (bytes > budget.bytes) overBudget('state_bytes', held.bytes, budget.bytes, 'too many bytes of state');
  }

  /** Deletes every key of an agent namespace (the identity it belonged to has ended). */
  dropAgentNamespace(agentName: string): number {
    return this.run('drop keys', () => this.stmts.dropNs.run(StateStore.ns('agent', agentName)).changes);
  }

  /** Reads a key: with a scope, only there; without, the agent's own namespace first, then the shared one. */
  get(key: string, scope: Scope | undefined, agentName: string): Entry | undefined {
    const now = Date.now();
    return this.run('fetch key', () => {
      const order = scope
        ? [StateStore.ns(scope, agentName)]
        : [StateStore.ns('agent', agentName), SHARED_NS];
      for (const ns of order) {
        const row = this.read(ns, key, now);
        if (row && (!scope || row.scope === scope))
          return { key, value: JSON.parse(row.value), scope: row.scope, owner: row.owner };
      }
      return undefined;
    });
  }

  /** Deletes a key the caller may delete; returns whether it existed (and was not expired). */
  delete(key: string, scope: Scope | undefined, owner: string, agentName: string, force: boolean): boolean {
    const now = Date.now();
    return this.run('delete key', () => {
      const tx = this.db.transaction(() => {
        const order = scope
          ? [StateStore.ns(scope, agentName)]
          : [StateStore.ns('agent', agentName), SHARED_NS];
        for (const ns of order) {
          const row = this.read(ns, key, now);
          if (!row) continue;
          if (ns === SHARED_NS && row.owner !== owner && !force) {
            throw new PermissionDeniedError(`Permission denied: key '${key}' belongs to ${row.owner}`);
          }
          this.stmts.del.run(ns, key);
          return true;
        }
        return false;
      });
      return tx();
    });
  }

  /**
   * Keys visible to the caller (shared ones and its own agent keys), prefix-matched on the key itself,
   * in order, at most `limit` after `after`; `more` says whether there are further ones.
   */
  keys(prefix: string, agentName: string, limit = 1000, after = ''): { keys: string[]; more: boolean } {
    const now = Date.now();
    return this.run('list keys', () => {
      const rows = this.stmts.keys.all(
        StateStore.ns('agent', agentName),
        now,
        prefix,
        prefix,
        after,
        limit + 1,
      ) as { key: string }[];
      return { keys: rows.slice(0, limit).map((r) => r.key), more: rows.length > limit };
    });
  }

  sweep(): number {
    try {
      return this.stmts.sweep.run(Date.now()).changes;
    } catch {
      return 0;
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    if (this.db.open) this.db.close();
  }
}
