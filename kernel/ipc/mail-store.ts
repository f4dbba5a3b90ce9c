/**
 * Mailboxes that survive a kernel crash (docs/restart.md): `DurableMail` wraps the in-memory PostOffice
 * and writes every message queued for an agent through to `<data-dir>/mail.db` (table `mailbox`, keyed
 * by the recipient's identity) BEFORE its SEND is answered, and deletes it once it left the kernel (taken
 * without a lease, or its lease acknowledged) or its identity ended. A kernel started again on the data
 * dir gives each agent it re-adopts or restores its identity's messages back, in order (`restoreFor`).
 *
 * Cost: the write of a message is one SQLite insert, committed before its SEND's reply leaves. Inserts
 * made while a connection serves the frames of one read are committed together (kernel/core/write-scope.ts, used
 * by Connection.pump before it uncorks its replies); deletes go in one transaction per event-loop turn,
 * after that turn's replies were written (so a reply lost to a crash leaves its message queued: at least
 * once). Clients' mailboxes (no identity) are not persisted: a client's id does not outlive its
 * connection. The fast path's mailboxes (native store) are not persisted either.
 */
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { StorageError } from '../core/errors.js';
import { atScopeEnd, cancelScopeEnd, inWriteScope } from '../core/write-scope.js';
import { openDatabase } from '../state/sqlite.js';
import type { Mail, Message } from './mailboxes.js';

interface Row {
  id: number;
  sender: number;
  sender_name: string;
  body: string;
  sent_at: number;
}

export interface DurableMailOptions {
  /** `<data-dir>/mail.db` (a file of its own: see the kernel). */
  path: string;
  durability?: 'normal' | 'full';
  /** The identity of an agent id (undefined: a client, or an agent without one: not persisted). */
  identityOf: (id: number) => string | undefined;
  log: Logger;
}

/** The Mail of the JavaScript path, with its agents' messages written through to SQLite. */
export class DurableMail implements Mail {
  private db?: Database.Database;
  private stmts?: Record<'insert' | 'del' | 'rows' | 'dropIdentity' | 'count', Database.Statement>;
  private o?: DurableMailOptions;
  /** The row of each persisted message still in the kernel. */
  private readonly rowOf = new WeakMap<Message, number>();
  /** Messages taken under a lease, by holder: their rows go when the lease is acknowledged. */
  private readonly leased = new Map<object, Message[]>();
  private deletes: number[] = [];
  private deleteTimer: NodeJS.Immediate | null = null;
  private inTxn = false;
  private readonly flush = () => this.commit();

  constructor(private readonly inner: Mail) {}

  /** Opens the store (kernel start, before any agent is back). Without it nothing is persisted. */
  open(o: DurableMailOptions): void {
    try {
      const db = openDatabase(o.path, o.durability);
      db.exec(`CREATE TABLE IF NOT EXISTS mailbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, identity TEXT NOT NULL, sender INTEGER NOT NULL,
        sender_name TEXT NOT NULL, body TEXT NOT NULL, sent_at INTEGER NOT NULL)`);
      db.exec('CREATE INDEX IF NOT EXISTS mailbox_identity ON mailbox (identity, id)');
      this.stmts = {
        insert: db.prepare(
          'INSERT INTO mailbox (identity, sender, sender_name, body, sent_at) VALUES (?, ?, ?, ?, ?)',
        ),
        del: db.prepare('DELETE FROM mailbox WHERE id = ?'),
        rows: db.prepare(
          'SELECT id, sender, sender_name, body, sent_at FROM mailbox WHERE identity = ? ORDER BY id',
        ),
        dropIdentity: db.prepare('DELETE FROM mailbox WHERE identity = ?'),
        count: db.prepare('SELECT count(*) AS n FROM mailbox WHERE identity = ?'),
      };
      this.db = db;
      this.o = o;
    } catch (e) {
      throw new StorageError(`cannot open the mailbox store at ${o.path}: ${(e as Error).message}`);
    }
  }

  close(): void {
    this.flushDeletes();
    this.commit();
    if (this.db?.open) this.db.close();
    this.db = undefined;
    this.stmts = undefined;
  }

  // --- persistence ----------------------------------------------------------------------------------

  private commit(): void {
    cancelScopeEnd(this.flush);
    if (!this.inTxn || !this.db) return;
    this.inTxn = false;
    try {
      this.db.exec('COMMIT');
    } catch (e) {
      this.o?.log.error({ err: (e as Error).message }, 'mailbox store: commit failed');
    }
  }

  /** Writes one message (inside the current write scope's transaction, if any); its row id. */
  private insert(identity: string, from: number, fromName: string, json: string, sentAt: number): number {
    const s = this.stmts!;
    if (inWriteScope() && !this.inTxn) {
      this.db!.exec('BEGIN');
      this.inTxn = true;
      atScopeEnd(this.flush);
    }
    return Number(s.insert.run(identity, from, fromName, json, sentAt).lastInsertRowid);
  }

  /** Rows to delete, in one transaction once this turn's replies are written. */
  private forget(ms: Message[]): void {
    for (const m of ms) {
      const row = this.rowOf.get(m);
      if (row === undefined) continue;
      this.rowOf.delete(m);
      this.deletes.push(row);
    }
    if (this.deletes.length && !this.deleteTimer) this.deleteTimer = setImmediate(() => this.flushDeletes());
  }

  private flushDeletes(): void {
    if (this.deleteTimer) clearImmediate(this.deleteTimer);
    this.deleteTimer = null;
    const rows = this.deletes.splice(0);
    if (!rows.length || !this.db) return;
    try {
      this.db.transaction(() => {
        for (const r of rows) this.stmts!.del.run(r);
      })();
    } catch (e) {
      // Left in the store: redelivered after a restart (at least once), never lost.
      this.o?.log.error({ err: (e as Error).message, rows: rows.length }, 'mailbox store: delete failed');
    }
  }

  /**
   * Gives agent `id` the messages its identity had queued when the last kernel stopped, in their order
   * (before any of its connections is served); returns how many. One that no longer fits its mailbox
   * stays in the store for the next restart and is logged.
   */
  restoreFor(identity: string, id: number): number {
    if (!this.stmts) return 0;
    let n = 0;
    for (const r of this.stmts.rows.all(identity) as Row[]) {
      try {
        const m = this.inner.deliver(id, r.sender, r.sender_name, r.body);
        m.sentAt = r.sent_at;
        this.rowOf.set(m, r.id);
        n++;
      } catch (e) {
        this.o?.log.warn(
          { identity, err: (e as Error).message },
          'mailbox store: a message did not fit back',
        );
      }
    }
    return n;
  }

  /** Messages an identity has in the store. */
  stored(identity: string): number {
    return this.stmts ? (this.stmts.count.get(identity) as { n: number }).n : 0;
  }

  /** Kernel start: the messages of identities that no longer exist go; returns how many. */
  prune(live: string[]): number {
    if (!this.db) return 0;
    const keep = new Set(live);
    const ids = (this.db.prepare('SELECT DISTINCT identity FROM mailbox').all() as { identity: string }[])
      .map((r) => r.identity)
      .filter((i) => !keep.has(i));
    let n = 0;
    for (const i of ids) n += this.stmts!.dropIdentity.run(i).changes;
    return n;
  }

  /** An identity ended: its messages go. */
  identityEnded(identity: string): void {
    try {
      this.stmts?.dropIdentity.run(identity);
    } catch (e) {
      this.o?.log.warn({ identity, err: (e as Error).message }, 'mailbox store: cannot drop an identity');
    }
  }

  // --- Mail -----------------------------------------------------------------------------------------

  deliver(to: number, from: number, fromName: string, json: string): Message {
    const identity = this.stmts ? this.o!.identityOf(to) : undefined;
    if (identity === undefined) return this.inner.deliver(to, from, fromName, json);
    // Written first: a message that cannot be stored is not accepted (a full disk loses nothing acknowledged).
    let row: number;
    try {
      row = this.insert(identity, from, fromName, json, Date.now());
    } catch (e) {
      throw new StorageError(`the message could not be stored: ${(e as Error).message}`);
    }
    let m: Message;
    try {
      m = this.inner.deliver(to, from, fromName, json);
    } catch (e) {
      try {
        this.stmts!.del.run(row);
      } catch {
        /* left: redelivered after a restart */
      }
      throw e;
    }
    this.rowOf.set(m, row);
    return m;
  }

  take(id: number, max: number, holder: object, lease?: boolean, maxBytes?: number): Message[] {
    const acked = this.leased.get(holder);
    const out = this.inner.take(id, max, holder, lease, maxBytes);
    if (acked) {
      this.leased.delete(holder);
      this.forget(acked);
    }
    if (lease && out.length) this.leased.set(holder, out);
    else this.forget(out);
    return out;
  }

  requeueLeases(id: number, holder: object): number {
    this.leased.delete(holder);
    return this.inner.requeueLeases(id, holder);
  }

  size(id: number): number {
    return this.inner.size(id);
  }
  bytes(id: number): number {
    return this.inner.bytes(id);
  }
  wait(id: number, ms: number, signal: AbortSignal): Promise<void> {
    return this.inner.wait(id, ms, signal);
  }
  register(id: number, name: string, maxExtra?: number): void {
    this.inner.register(id, name, maxExtra);
  }
  unregister(id: number, name: string): boolean {
    return this.inner.unregister(id, name);
  }
  resolve(name: string): number | undefined {
    return this.inner.resolve(name);
  }
  nameOf(id: number): string {
    return this.inner.nameOf(id);
  }
  named(): number[] {
    return this.inner.named();
  }
  /** Forgets an id's mailbox in memory; its rows stay while its identity lives (`identityEnded`). */
  release(id: number): void {
    this.inner.release(id);
  }
}
