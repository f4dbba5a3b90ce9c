/**
 * The journal's storage (docs/durable.md): two tables of their own in `<data-dir>/state.db`, through a
 * connection of their own (WAL lets it live beside the state store's), so that a journal is backed up
 * and restored with the identities it belongs to. A step is a row of `journal_steps` (owner, key, state,
 * counts); its calls are rows of `journal_entries`, numbered from 1 in the order they were made, each
 * with the hash of its request and the reply as sent. Every change is one transaction: a reply the
 * caller got is in the journal when the kernel writes it (WAL, synchronous=NORMAL: it survives a crash
 * of the kernel; `durability: 'full'` also a power loss).
 */
import type Database from 'better-sqlite3';
import { StorageError } from '../core/errors.js';
import { openDatabase } from '../state/sqlite.js';

/** What a step costs against `journal_bytes` besides its entries. */
export const STEP_OVERHEAD = 256;
/** What a journaled call costs besides its reply's bytes (its position, op, hash, row). */
export const ENTRY_OVERHEAD = 128;

export type StepState = 'in_progress' | 'completed';

export interface StepRow {
  key: string;
  state: StepState;
  entries: number;
  /** Bytes held: STEP_OVERHEAD plus every entry's reply and ENTRY_OVERHEAD. */
  bytes: number;
  created_at: number;
  updated_at: number;
}

export interface EntryRow {
  op: string;
  hash: string;
  reply: string;
}

export class JournalStore {
  private readonly db: Database.Database;
  private readonly q: Record<string, Database.Statement>;

  constructor(opts: { path: string; durability?: 'normal' | 'full' }) {
    try {
      this.db = openDatabase(opts.path, opts.durability);
      this.db.exec(`CREATE TABLE IF NOT EXISTS journal_steps (
          owner TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL, entries INTEGER NOT NULL,
          bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
          PRIMARY KEY (owner, key)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS journal_entries (
          owner TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, op TEXT NOT NULL,
          hash TEXT NOT NULL, reply TEXT NOT NULL, at INTEGER NOT NULL,
          PRIMARY KEY (owner, key, seq));`);
    } catch (e) {
      throw new StorageError(`cannot open the journal at ${opts.path}: ${(e as Error).message}`);
    }
    this.q = {
      step: this.db.prepare(
        'SELECT key, state, entries, bytes, created_at, updated_at FROM journal_steps WHERE owner = ? AND key = ?',
      ),
      steps: this.db.prepare(
        `SELECT key, state, entries, bytes, created_at, updated_at FROM journal_steps WHERE owner = ?
         ORDER BY updated_at DESC, key LIMIT ?`,
      ),
      totals: this.db.prepare(
        'SELECT coalesce(sum(entries), 0) AS entries, coalesce(sum(bytes), 0) AS bytes FROM journal_steps WHERE owner = ?',
      ),
      insertStep: this.db.prepare(`INSERT INTO journal_steps
        (owner, key, state, entries, bytes, created_at, updated_at) VALUES (?, ?, 'in_progress', 0, ${STEP_OVERHEAD}, ?, ?)`),
      entry: this.db.prepare(
        'SELECT op, hash, reply FROM journal_entries WHERE owner = ? AND key = ? AND seq = ?',
      ),
      insertEntry: this.db.prepare(
        'INSERT INTO journal_entries (owner, key, seq, op, hash, reply, at) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      grow: this.db.prepare(`UPDATE journal_steps SET entries = entries + 1, bytes = bytes + ?,
        state = 'in_progress', updated_at = ? WHERE owner = ? AND key = ?`),
      cut: this.db.prepare('DELETE FROM journal_entries WHERE owner = ? AND key = ? AND seq >= ?'),
      recount: this.db.prepare(`UPDATE journal_steps SET
          entries = (SELECT count(*) FROM journal_entries e WHERE e.owner = journal_steps.owner AND e.key = journal_steps.key),
          bytes = ${STEP_OVERHEAD} + (SELECT coalesce(sum(length(CAST(reply AS BLOB)) + ${ENTRY_OVERHEAD}), 0)
            FROM journal_entries e WHERE e.owner = journal_steps.owner AND e.key = journal_steps.key),
          state = 'in_progress', updated_at = ?
        WHERE owner = ? AND key = ?`),
      mark: this.db.prepare('UPDATE journal_steps SET state = ?, updated_at = ? WHERE owner = ? AND key = ?'),
      dropEntries: this.db.prepare('DELETE FROM journal_entries WHERE owner = ? AND key = ?'),
      dropStep: this.db.prepare('DELETE FROM journal_steps WHERE owner = ? AND key = ?'),
      dropOwnerEntries: this.db.prepare('DELETE FROM journal_entries WHERE owner = ?'),
      dropOwnerSteps: this.db.prepare('DELETE FROM journal_steps WHERE owner = ?'),
      owners: this.db.prepare('SELECT DISTINCT owner FROM journal_steps'),
    };
  }

  private run<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw new StorageError(`journal: failed to ${what}: ${(e as Error).message}`);
    }
  }

  step(owner: string, key: string): StepRow | undefined {
    return this.run('read a step', () => this.q.step.get(owner, key) as StepRow | undefined);
  }

  /** The owner's steps, most recently changed first. */
  steps(owner: string, limit: number): StepRow[] {
    return this.run('list steps', () => this.q.steps.all(owner, limit) as StepRow[]);
  }

  /** What the owner's journal holds, every step. */
  totals(owner: string): { entries: number; bytes: number } {
    return this.run('count a journal', () => this.q.totals.get(owner) as { entries: number; bytes: number });
  }

  /** The step (created in progress when absent; emptied first with `fresh`). */
  open(owner: string, key: string, fresh: boolean): StepRow {
    return this.run('open a step', () =>
      this.db.transaction(() => {
        if (fresh) {
          this.q.dropEntries.run(owner, key);
          this.q.dropStep.run(owner, key);
        }
        let row = this.q.step.get(owner, key) as StepRow | undefined;
        if (!row) {
          const now = Date.now();
          this.q.insertStep.run(owner, key, now, now);
          row = this.q.step.get(owner, key) as StepRow;
        }
        return row;
      })(),
    );
  }

  /** The call journaled at position `seq` of a step, if any. */
  entry(owner: string, key: string, seq: number): EntryRow | undefined {
    return this.run('read an entry', () => this.q.entry.get(owner, key, seq) as EntryRow | undefined);
  }

  /** Journals call `seq` of a step (the step goes back to in progress); returns the bytes it holds. */
  append(owner: string, key: string, seq: number, op: string, hash: string, reply: string): number {
    const bytes = Buffer.byteLength(reply) + ENTRY_OVERHEAD;
    this.run('journal a call', () =>
      this.db.transaction(() => {
        const now = Date.now();
        if (!this.q.step.get(owner, key)) this.q.insertStep.run(owner, key, now, now);
        this.q.insertEntry.run(owner, key, seq, op, hash, reply, now);
        this.q.grow.run(bytes, now, owner, key);
      })(),
    );
    return bytes;
  }

  /** Drops the entries of a step from position `seq` on. */
  truncate(owner: string, key: string, seq: number): void {
    this.run('truncate a step', () =>
      this.db.transaction(() => {
        this.q.cut.run(owner, key, seq);
        this.q.recount.run(Date.now(), owner, key);
      })(),
    );
  }

  /** Marks a step completed (STEP_END) or in progress again (STEP_END `complete: false`). */
  mark(owner: string, key: string, state: StepState): void {
    this.run('mark a step', () => this.q.mark.run(state, Date.now(), owner, key));
  }

  /** Forgets one step, or every step of the owner; returns how many steps and entries went. */
  clear(owner: string, key?: string): { steps: number; entries: number } {
    return this.run('clear steps', () =>
      this.db.transaction(() => {
        if (key === undefined) {
          const entries = this.q.dropOwnerEntries.run(owner).changes;
          return { steps: this.q.dropOwnerSteps.run(owner).changes, entries };
        }
        const entries = this.q.dropEntries.run(owner, key).changes;
        return { steps: this.q.dropStep.run(owner, key).changes, entries };
      })(),
    );
  }

  /** Every owner that has a journal. */
  owners(): string[] {
    return this.run('list owners', () => (this.q.owners.all() as { owner: string }[]).map((r) => r.owner));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
