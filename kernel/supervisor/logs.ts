/**
 * Per-agent log files. The agent writes straight into its file (its stdout and stderr are an O_APPEND
 * fd, no pipe through the kernel); the kernel bounds the size by copy-and-truncate rotation on a timer,
 * which keeps working while the agent holds the fd open.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface LogOptions {
  dir: string;
  maxBytes: number;
  keep: number;
  checkIntervalMs?: number;
}

export class AgentLogs {
  private timer: NodeJS.Timeout;
  private active = new Set<string>();

  constructor(private readonly opts: LogOptions) {
    fs.mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    this.timer = setInterval(() => this.check(), opts.checkIntervalMs ?? 2000);
    this.timer.unref();
  }

  file(name: string): string {
    return path.join(this.opts.dir, `${name}.log`);
  }

  /** Opens the agent's log for appending; the caller hands the fd to the spawner and closes its copy. */
  open(name: string): number {
    this.active.add(name);
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

  check(): void {
    for (const name of this.active) this.rotateIfNeeded(name);
  }

  rotateIfNeeded(name: string): boolean {
    const file = this.file(name);
    try {
      if (fs.statSync(file).size <= this.opts.maxBytes) return false;
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
