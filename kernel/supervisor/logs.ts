/**
 * Per-agent log files. The agent writes straight into its file (its stdout and stderr are an O_APPEND
 * fd, no pipe through the kernel); the kernel bounds the size by copy-and-truncate rotation on a timer,
 * which keeps working while the agent holds the fd open.
 *
 * A log that did not change since its last check is checked half as often each time (down to once every
 * QUIET_MAX_FACTOR intervals), one that grows every interval: an idle kernel with 10,000 agents would
 * otherwise stat 10,000 files every interval (66 ms of CPU each time, 3 % of a core at 2 s).
 */
import fs from 'node:fs';
import path from 'node:path';

export interface LogOptions {
  dir: string;
  maxBytes: number;
  keep: number;
  checkIntervalMs?: number;
}

/** The longest wait between two checks of a quiet log, in check intervals (2 s: 32 s). */
export const QUIET_MAX_FACTOR = 16;

/** What the last check of a log saw: its size (-1: none), how many checks in a row it stayed so, when it is due. */
interface Watched {
  size: number;
  quiet: number;
  due: number;
}

export class AgentLogs {
  private timer: NodeJS.Timeout;
  private active = new Map<string, Watched>();
  private readonly intervalMs: number;

  constructor(private readonly opts: LogOptions) {
    fs.mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    this.intervalMs = opts.checkIntervalMs ?? 2000;
    this.timer = setInterval(() => this.check(), this.intervalMs);
    this.timer.unref();
  }

  file(name: string): string {
    return path.join(this.opts.dir, `${name}.log`);
  }

  /** Opens the agent's log for appending; the caller hands the fd to the spawner and closes its copy. */
  open(name: string): number {
    this.active.set(name, { size: -1, quiet: 0, due: 0 });
    const fd = fs.openSync(
      this.file(name),
      fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT,
      0o600,
    );
    return fd;
  }

  /** Appends a kernel note (exit, restart) to the agent's log, so `clove logs` tells the whole story. */
  note(name: string, line: string): void {
    try {
      fs.appendFileSync(this.file(name), `[clove ${new Date().toISOString()}] ${line}\n`, { mode: 0o600 });
    } catch {
      // A full disk must not take the supervisor down; the event stream still has the news.
    }
  }

  forget(name: string): void {
    this.active.delete(name);
  }

  /**
   * Rotates the logs that are due and over the bound. A log is due every interval while it changes;
   * each check that finds it unchanged doubles its wait, up to QUIET_MAX_FACTOR intervals.
   */
  check(now = Date.now()): void {
    for (const [name, w] of this.active) {
      if (w.due > now) continue;
      const size = this.sizeOf(name);
      const rotated = size > this.opts.maxBytes && this.rotate(name);
      w.quiet = !rotated && size === w.size ? Math.min(w.quiet * 2 || 1, QUIET_MAX_FACTOR) : 0;
      w.size = rotated ? 0 : size;
      // Half an interval early: the timer's ticks drift, and a due log must not wait one more tick.
      w.due = now + this.intervalMs * Math.max(1, w.quiet) - this.intervalMs / 2;
    }
  }

  /** When the log of `name` is checked next (Date.now() ms; undefined: not watched). */
  dueAt(name: string): number | undefined {
    return this.active.get(name)?.due;
  }

  private sizeOf(name: string): number {
    try {
      return fs.statSync(this.file(name)).size;
    } catch {
      return -1;
    }
  }

  rotateIfNeeded(name: string): boolean {
    return this.sizeOf(name) > this.opts.maxBytes && this.rotate(name);
  }

  /** Copy-and-truncate: the agent keeps appending to the same file (O_APPEND) while it is copied aside. */
  private rotate(name: string): boolean {
    const file = this.file(name);
    try {
      for (let i = this.opts.keep - 1; i >= 1; i--) {
        const from = `${file}.${i}`;
        if (fs.existsSync(from)) fs.renameSync(from, `${file}.${i + 1}`);
      }
      if (this.opts.keep > 0) fs.copyFileSync(file, `${file}.1`);
      fs.truncateSync(file, 0);
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}
