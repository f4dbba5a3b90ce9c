/**
 * The audit log: what was done to agents and every security decision (clove-wire-reference.md §3.14
 * categories), persisted in `<data-dir>/state.db` (it survives the kernel), bounded to `max_entries`
 * (oldest trimmed first). The dispatcher writes every denial here on its own; services write lifecycle
 * and security events; with `log_syscalls` on, the audit family writes every syscall. Readable and
 * configurable by operators only (the audit family, docs/protocol.md "Audit").
 *
 * Writes: an entry is in the table when `record()` returns, except SYSCALL entries, which are written in
 * one transaction per event-loop turn (a kernel under load makes thousands of syscalls a second; one
 * commit each would cost more than the syscalls). Anything that reads or writes otherwise writes them
 * first, so ids stay in the order things happened; a kernel killed with SIGKILL loses at most the
 * SYSCALL entries of its last turn.
 */
import type Database from 'better-sqlite3';
import type { AuditConfig } from '../../protocol/index.js';
import { openDatabase } from '../state/sqlite.js';

export const AUDIT_CATEGORIES = [
  'SECURITY',
  'AGENT_LIFECYCLE',
  'IPC',
  'STATE_STORE',
  'RESOURCE',
  'SYSCALL',
  'NETWORK',
  'WORLD',
] as const;
export type AuditCategory = (typeof AUDIT_CATEGORIES)[number];

/** Families whose calls touch the world outside the kernel: every refusal of theirs is audited. */
const WORLD_FAMILIES: ReadonlySet<string> = new Set(['files', 'exec', 'http', 'llm', 'mcp']);

/** The most entries one query returns (GET_AUDIT_LOG `limit` is capped to it). */
export const AUDIT_QUERY_MAX = 1000;
/** The largest `max_entries` (the table's bound) a configuration may set. */
export const AUDIT_MAX_ENTRIES_CAP = 1_000_000;

export interface AuditEntry {
  category: AuditCategory;
  event_type: string;
  agent_id: number;
  agent_name?: string;
  success: boolean;
  details: Record<string, unknown>;
}

export interface StoredAuditEntry extends AuditEntry {
  id: number;
  /** UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`. */
  timestamp: string;
}

/** What is recorded (the reference's SET_AUDIT_CONFIG fields; the contract's `AuditConfig`). */
export type { AuditConfig };

export const DEFAULT_AUDIT_CONFIG: Readonly<AuditConfig> = Object.freeze({
  max_entries: 10_000,
  log_syscalls: false,
  log_security: true,
  log_lifecycle: true,
  log_ipc: false,
  log_state: false,
  log_resource: true,
  log_network: false,
  log_world: false,
});

const SWITCH: Record<AuditCategory, keyof AuditConfig> = {
  SECURITY: 'log_security',
  AGENT_LIFECYCLE: 'log_lifecycle',
  IPC: 'log_ipc',
  STATE_STORE: 'log_state',
  RESOURCE: 'log_resource',
  SYSCALL: 'log_syscalls',
  NETWORK: 'log_network',
  WORLD: 'log_world',
};

/** Trim the table once per this many inserts (reads never see more than `max_entries` anyway). */
const TRIM_EVERY = 100;
/** Write the pending SYSCALL entries at once when this many wait (a long turn). */
const BATCH_MAX = 512;

type Row = [number, AuditCategory, string, number, string | null, 0 | 1, string];

export class AuditLog {
  private readonly db: Database.Database;
  private readonly stmts: Record<string, Database.Statement>;
  private readonly writeBatch: (rows: Row[]) => void;
  private cfg: AuditConfig;
  private inserted = 0;

  /**
   * Audits a refused syscall, once for every family and for async results alike: every
   * permission_denied (SECURITY) and quota_exceeded (RESOURCE), and any other refusal by a non-operator
   * of a call that touches the world (READ, WRITE, EXEC, HTTP, THINK, MCP_*: SECURITY REQUEST_REFUSED). A
   * failure of the world itself (upstream_failed, io_error) or of the kernel (internal) is not a
   * refusal.
   */
  refusal(
    caller: { id: number; name: string; role: string },
    op: string,
    family: string,
    reply: Record<string, unknown>,
    details: Record<string, unknown> = {},
  ): void {
    const code = reply.code;
    let category: AuditCategory;
    let event: string;
    if (code === 'permission_denied') [category, event] = ['SECURITY', 'PERMISSION_DENIED'];
    else if (code === 'quota_exceeded') [category, event] = ['RESOURCE', 'QUOTA_EXCEEDED'];
    else if (
      caller.role !== 'operator' &&
      WORLD_FAMILIES.has(family) &&
      !['upstream_failed', 'io_error', 'internal'].includes(String(code))
    )
      [category, event] = ['SECURITY', 'REQUEST_REFUSED'];
    else return;
    this.record({
      category,
      event_type: event,
      agent_id: caller.id,
      agent_name: caller.name,
      success: false,
      details: { syscall: op, ...details, ...reply },
    });
  }
  private pending: Row[] = [];
  private flushing: NodeJS.Immediate | null = null;

  constructor(opts: { path: string; durability?: 'normal' | 'full' }) {
    this.db = openDatabase(opts.path, opts.durability);
    this.db.exec(`CREATE TABLE IF NOT EXISTS audit (
      id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, category TEXT NOT NULL,
      event_type TEXT NOT NULL, agent_id INTEGER NOT NULL, agent_name TEXT, success INTEGER NOT NULL,
      details TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS audit_agent ON audit (agent_id, id);
      CREATE TABLE IF NOT EXISTS audit_config (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;`);
    const row = this.db.prepare("SELECT v FROM audit_config WHERE k = 'config'").get() as
      { v: string } | undefined;
    this.cfg = { ...DEFAULT_AUDIT_CONFIG, ...(row ? (JSON.parse(row.v) as Partial<AuditConfig>) : {}) };
    // Ids are AUTOINCREMENT and only the oldest are ever deleted: the newest max_entries entries are
    // exactly those with id > max(id) - max_entries, whether or not the batched trim has run yet.
    this.stmts = {
      insert: this.db
        .prepare(`INSERT INTO audit (at, category, event_type, agent_id, agent_name, success, details)
        VALUES (?, ?, ?, ?, ?, ?, ?)`),
      trim: this.db.prepare('DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?'),
      saveConfig: this.db.prepare(
        "INSERT INTO audit_config (k, v) VALUES ('config', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
      ),
      query: this.db.prepare(`SELECT * FROM (
        SELECT id, at, category, event_type, agent_id, agent_name, success, details FROM audit
        WHERE id > @since AND id > (SELECT coalesce(max(id), 0) FROM audit) - @bound
          AND (@category IS NULL OR category = @category) AND (@agent = 0 OR agent_id = @agent)
          AND (@event IS NULL OR event_type = @event)
        ORDER BY id DESC LIMIT @limit) ORDER BY id`),
    };
    this.writeBatch = this.db.transaction((rows: Row[]) => {
      for (const r of rows) this.stmts.insert.run(...r);
    });
  }

  get config(): Readonly<AuditConfig> {
    return this.cfg;
  }

  /** Whether entries of `category` are recorded. */
  enabled(category: AuditCategory): boolean {
    return this.cfg[SWITCH[category]] as boolean;
  }

  /** A category by its reference name, in any case (`security`, `AGENT_LIFECYCLE`…); undefined if unknown. */
  category(name: string): AuditCategory | undefined {
    const up = name.trim().toUpperCase();
    return (AUDIT_CATEGORIES as readonly string[]).includes(up) ? (up as AuditCategory) : undefined;
  }

  /** The reference's category names. */
  get categories(): readonly AuditCategory[] {
    return AUDIT_CATEGORIES;
  }

  /**
   * Records an entry if its category is switched on (or `force`: an entry that must exist whatever the
   * switches say, e.g. the change of the switches themselves); never throws (an audit write that fails
   * must not fail the syscall it describes): it returns false instead.
   */
  record(e: AuditEntry, opts: { force?: boolean } = {}): boolean {
    if (!opts.force && !this.enabled(e.category)) return false;
    if (!this.db.open) return false;
    try {
      const row: Row = [
        Date.now(),
        e.category,
        e.event_type,
        e.agent_id,
        e.agent_name || null,
        e.success ? 1 : 0,
        JSON.stringify(e.details),
      ];
      if (e.category === 'SYSCALL') {
        this.pending.push(row);
        if (this.pending.length >= BATCH_MAX) this.flush();
        else this.flushing ??= setImmediate(() => this.flush());
        return true;
      }
      this.flush();
      this.stmts.insert.run(...row);
      this.wrote(1);
      return true;
    } catch {
      return false;
    }
  }

  /** Writes the pending SYSCALL entries (one transaction). */
  flush(): void {
    if (this.flushing) clearImmediate(this.flushing);
    this.flushing = null;
    if (!this.pending.length || !this.db.open) return;
    const rows = this.pending;
    this.pending = [];
    try {
      this.writeBatch(rows);
      this.wrote(rows.length);
    } catch {
      /* an audit write never fails a syscall (see record) */
    }
  }

  private wrote(n: number): void {
    const before = this.inserted;
    this.inserted += n;
    if (Math.floor(before / TRIM_EVERY) !== Math.floor(this.inserted / TRIM_EVERY))
      this.stmts.trim.run(this.cfg.max_entries);
  }

  /** Changes what is recorded (persisted); returns the whole configuration. */
  configure(change: Partial<AuditConfig>): AuditConfig {
    this.flush();
    const next = { ...this.cfg };
    for (const k of Object.keys(DEFAULT_AUDIT_CONFIG) as (keyof AuditConfig)[]) {
      const v = change[k];
      if (v !== undefined) (next as Record<string, unknown>)[k] = v;
    }
    next.max_entries = Math.min(AUDIT_MAX_ENTRIES_CAP, Math.max(1, Math.floor(next.max_entries)));
    this.cfg = next;
    this.stmts.saveConfig.run(JSON.stringify(this.cfg));
    this.stmts.trim.run(this.cfg.max_entries);
    return { ...this.cfg };
  }

  /**
   * The newest `limit` (at most AUDIT_QUERY_MAX) entries with id > `since`, of a category, an agent
   * (0: any) and an event type, oldest first; `more` when older matching entries were left out.
   */
  query(q: {
    category?: AuditCategory;
    agentId?: number;
    eventType?: string;
    since?: number;
    limit?: number;
  }): {
    entries: StoredAuditEntry[];
    more: boolean;
  } {
    this.flush();
    const limit = Math.min(AUDIT_QUERY_MAX, Math.max(0, Math.floor(q.limit ?? 100)));
    if (limit === 0) return { entries: [], more: false };
    const rows = this.stmts.query.all({
      since: q.since ?? 0,
      bound: this.cfg.max_entries,
      category: q.category ?? null,
      agent: q.agentId ?? 0,
      event: q.eventType || null,
      limit: limit + 1,
    }) as {
      id: number;
      at: number;
      category: AuditCategory;
      event_type: string;
      agent_id: number;
      agent_name: string | null;
      success: number;
      details: string;
    }[];
    const more = rows.length > limit;
    if (more) rows.shift();
    return {
      more,
      entries: rows.map((r) => ({
        id: r.id,
        timestamp: new Date(r.at).toISOString(),
        category: r.category,
        event_type: r.event_type,
        agent_id: r.agent_id,
        ...(r.agent_name ? { agent_name: r.agent_name } : {}),
        success: r.success === 1,
        details: JSON.parse(r.details) as Record<string, unknown>,
      })),
    };
  }

  close(): void {
    this.flush();
    if (this.db.open) this.db.close();
  }
}
