/**
 * Bounds what READs hold in the kernel at once. Each read reserves the most it may load (`max_bytes` + 1,
 * or `length`); reads run while the kernel-wide reservation stays under `totalBytes` and the caller has
 * fewer than `perCaller` reads running. The others wait, in order (a caller at its own limit does not
 * hold up the others), until a read ends or their connection closes. So a flood of READs from one agent
 * costs the kernel at most `perCaller` × 16 MiB, and all of them together at most `totalBytes`.
 */

interface Waiter {
  caller: number;
  bytes: number;
  grant: () => void;
}

export class ReadGate {
  private used = 0;
  private readonly running = new Map<number, number>();
  private readonly queue: Waiter[] = [];

  constructor(
    private readonly totalBytes: number,
    private readonly perCaller: number,
  ) {}

  /** Resolves with the release function once the read may run; rejects if `signal` aborts first. */
  acquire(caller: number, bytes: number, signal: AbortSignal): Promise<() => void> {
    const n = Math.min(Math.max(0, bytes), this.totalBytes);
    if (signal.aborted) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        caller,
        bytes: n,
        grant: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(this.take(w));
        },
      };
      const onAbort = () => {
        const i = this.queue.indexOf(w);
        if (i >= 0) this.queue.splice(i, 1);
        reject(new Error('connection closed'));
        this.pump();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.queue.push(w);
      this.pump();
    });
  }

  /** Reads running and bytes reserved (tests, metrics). */
  usage(): { bytes: number; waiting: number } {
    return { bytes: this.used, waiting: this.queue.length };
  }

  private take(w: Waiter): () => void {
    this.used += w.bytes;
    this.running.set(w.caller, (this.running.get(w.caller) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.used -= w.bytes;
      const left = (this.running.get(w.caller) ?? 1) - 1;
      if (left > 0) this.running.set(w.caller, left);
      else this.running.delete(w.caller);
      this.pump();
    };
  }

  private pump(): void {
    for (let i = 0; i < this.queue.length;) {
      const w = this.queue[i];
      if ((this.running.get(w.caller) ?? 0) >= this.perCaller) {
        i++;
        continue;
      }
      // Bytes are granted strictly in order: a large read is not starved by small ones behind it.
      if (this.used + w.bytes > this.totalBytes) return;
      this.queue.splice(i, 1);
      w.grant();
    }
  }
}
