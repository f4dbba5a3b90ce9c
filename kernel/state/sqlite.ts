/** Opening the kernel's SQLite file the one way every user of it needs (the state store, the identity registry). */
import fs from 'node:fs';
import Database from 'better-sqlite3';

/**
 * Opens `file` in WAL mode with the given durability: `normal` survives a crash of the kernel, `full`
 * (fsync per commit) also a power loss. Mode 0600: agents run as other uids and must never read it
 * directly (the WAL files copy this mode).
 */
export function openDatabase(file: string, durability: 'normal' | 'full' = 'normal'): Database.Database {
  const db = new Database(file);
  fs.chmodSync(file, 0o600);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${durability === 'full' ? 'FULL' : 'NORMAL'}`);
  db.pragma('busy_timeout = 2000');
  return db;
}
