/**
 * The audit log: what was done to agents and every security decision (clove-wire-reference.md §3.14
 * categories), persisted in `<data-dir>/state.db`, bounded to `max_entries` (oldest trimmed first). The
 * dispatcher writes every denial here on its own; services write lifecycle and security events; with
 * `log_syscalls` on, every syscall. Readable and configurable by operators only (the audit family).
 */
import type Database from 'better-sqlite3';
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

/** What is recorded (the reference's SET_AUDIT_CONFIG fields and defaults). */
export interface AuditConfig {
  max_entries: number;
  log_syscalls: boolean;
  log_security: boolean;
  log_lifecycle: boolean;
  log_ipc: boolean;
  log_state: boolean;
  log_resource: boolean;
  log_network: boolean;
  log_world: boolean;
}

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

export class AuditLog {
  private readonly db: Database.Database;
  private readonly stmts: Record<string, Database.Statement>;
  private cfg: AuditConfig;

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
        WHERE id > @since AND (@category IS NULL OR category = @category) AND (@agent = 0 OR agent_id = @agent)
        ORDER BY id DESC LIMIT @limit) ORDER BY id`),
    };
  }

  get config(): Readonly<AuditConfig> {
    return this.cfg;
  }

  /** Whether entries of `category` are recorded. */
  enabled(category: AuditCategory): boolean {
    return this.cfg[SWITCH[category]] as boolean;
  }

  /**
   * Records an entry if its category is switched on; never throws (an audit write that fails must not
   * fail the syscall it describes): it returns false instead.
   */
  record(e: AuditEntry): boolean {
    if (!this.enabled(e.category)) return false;
    try {
      this.stmts.insert.run(
        Date.now(),
        e.category,
        e.event_type,
        e.agent_id,
        e.agent_name ?? null,
        e.success ? 1 : 0,
        JSON.stringify(e.details),
      );
      this.inserted++;
      // Trim in batches: one DELETE per hundred inserts keeps the table within max_entries + 100.
      if (this.inserted % 100 === 0) this.stmts.trim.run(this.cfg.max_entries);
      return true;
    } catch {
      return false;
    }
  }

  private inserted = 0;

  /** Changes what is recorded (persisted); returns the whole configuration. */
  configure(change: Partial<AuditConfig>): AuditConfig {
    this.cfg = { ...this.cfg, ...change };
    this.stmts.saveConfig.run(JSON.stringify(this.cfg));
    this.stmts.trim.run(this.cfg.max_entries);
    return this.cfg;
  }

  /** The newest `limit` entries with id > `since`, of a category and an agent (0: any), oldest first. */
  query(q: {
    category?: AuditCategory;
    agentId?: number;
    since?: number;
    limit?: number;
  }): StoredAuditEntry[] {
    const rows = this.stmts.query.all({
      since: q.since ?? 0,
      category: q.category ?? null,
      agent: q.agentId ?? 0,
      limit: q.limit ?? 100,
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
    return rows.map((r) => ({
      id: r.id,
      timestamp: new Date(r.at).toISOString(),
      category: r.category,
      event_type: r.event_type,
      agent_id: r.agent_id,
      ...(r.agent_name ? { agent_name: r.agent_name } : {}),
      success: r.success === 1,
      details: JSON.parse(r.details) as Record<string, unknown>,
    }));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
