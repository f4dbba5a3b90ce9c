/**
 * Parked callers waiting for something to arrive (a message, an event), each with a deadline and an
 * abort signal (the connection closing). Wake-ups are edge-triggered: the waiter re-checks its queue.
 */
export class Waiters<T = void> {
  private set = new Set<(v: T | undefined) => void>();

  get size(): number {
    return this.set.size;
  }

  wait(ms: number, signal: AbortSignal): Promise<T | undefined> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve(undefined);
      const done = (v: T | undefined): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.set.delete(done);
        resolve(v);
      };
      const onAbort = (): void => done(undefined);
      const timer = setTimeout(() => done(undefined), ms);
      signal.addEventListener('abort', onAbort, { once: true });
      this.set.add(done);
    });
  }

  wakeAll(v?: T): void {
    for (const w of [...this.set]) w(v);
  }
}

/**
 * Parks until `ready()` holds, `timeoutMs` passes or `signal` aborts, sleeping on `park` (which wakes on
 * new items) rather than polling. Shared by RECV and POLL_EVENTS.
 */
export async function parkUntil(
  ready: () => boolean,
  park: (ms: number, signal: AbortSignal) => Promise<unknown>,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready() && !signal.aborted) {
    const left = deadline - Date.now();
    if (left <= 0) return;
    await park(left, signal);
  }
}
