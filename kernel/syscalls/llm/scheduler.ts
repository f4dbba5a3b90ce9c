/**
 * The fair scheduler of provider calls. Each owner (an agent, or a client connection) has a FIFO queue;
 * a free slot goes to the owner served least recently (one that has just arrived counts as never
 * served), so owners are served round-robin and a flood from one owner delays another's call by at
 * most the calls already running. A slot is free when the global cap and the call's lane (its
 * provider) cap allow; within an owner's queue the first call whose lane has room runs first.
 * An owner's queue is bounded (`quota_exceeded`); a call whose signal aborts leaves its queue at once,
 * or is aborted if it is running.
 */
import { QuotaExceededError } from '../../core/family.js';

export class CancelledError extends Error {
  constructor(message = 'cancelled: the connection closed') {
    super(message);
    this.name = 'CancelledError';
  }
}

export interface SchedulerOptions {
  /** Calls running at once, every lane together. */
  maxConcurrency: number;
  /** Calls an owner may have waiting (running ones not counted). */
  maxQueuePerOwner: number;
  /** Calls one lane may run at once. */
  laneCap(lane: string): number;
}

interface Job {
  owner: number;
  lane: string;
  signal: AbortSignal;
  run: (signal: AbortSignal) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  onAbort: () => void;
}

export class FairScheduler {
  private readonly queues = new Map<number, Job[]>();
  /** Owners with a call waiting or running → when they were last served (0: not yet). */
  private readonly lastServed = new Map<number, number>();
  private readonly runningOf = new Map<number, number>();
  private readonly laneRunning = new Map<string, number>();
  private readonly controllers = new Set<AbortController>();
  private running = 0;
  private served = 0;
  private closed = false;

  constructor(private readonly o: SchedulerOptions) {}

  /** Runs `run` when the owner's turn comes; rejects at once when the owner's queue is full. */
  submit<T>(
    owner: number,
    lane: string,
    signal: AbortSignal,
    run: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new CancelledError('cancelled: the kernel is stopping'));
      if (signal.aborted) return reject(new CancelledError());
      const full = this.full(owner);
      if (full) return reject(full);
      const queue = this.queues.get(owner) ?? [];
      const job: Job = {
        owner,
        lane,
        signal,
        run: run as Job['run'],
        resolve: resolve as Job['resolve'],
        reject,
        onAbort: () => {
          const q = this.queues.get(owner);
          const i = q?.indexOf(job) ?? -1;
          if (i < 0) return; // running: its own controller aborts it
          q!.splice(i, 1);
          if (!q!.length) this.queues.delete(owner);
          this.idle(owner);
          reject(new CancelledError());
        },
      };
      signal.addEventListener('abort', job.onAbort, { once: true });
      queue.push(job);
      this.queues.set(owner, queue);
      if (!this.lastServed.has(owner)) this.lastServed.set(owner, 0);
      this.pump();
    });
  }

  /** Throws what `submit` would reject with at once when the owner's queue is full (a caller that must know before it submits). */
  checkRoom(owner: number): void {
    const full = this.full(owner);
    if (full) throw full;
  }

  private full(owner: number): QuotaExceededError | undefined {
    const waiting = this.queues.get(owner)?.length ?? 0;
    if (waiting < this.o.maxQueuePerOwner) return undefined;
    return new QuotaExceededError(
      `quota exceeded: LLM calls waiting (budget llm_queue: ${waiting} of ${this.o.maxQueuePerOwner})`,
      { budget: 'llm_queue', used: waiting, limit: this.o.maxQueuePerOwner },
    );
  }

  /** What is waiting and running (METRICS, tests). */
  stats(): { running: number; queued: number; owners: number } {
    let queued = 0;
    for (const q of this.queues.values()) queued += q.length;
    return { running: this.running, queued, owners: this.lastServed.size };
  }

  /** Rejects every waiting call and aborts the running ones (kernel shutdown). */
  close(): void {
    this.closed = true;
    for (const q of this.queues.values())
      for (const job of q) {
        job.signal.removeEventListener('abort', job.onAbort);
        job.reject(new CancelledError('cancelled: the kernel is stopping'));
      }
    this.queues.clear();
    for (const c of this.controllers) c.abort(new CancelledError('cancelled: the kernel is stopping'));
  }

  private laneHasRoom(lane: string): boolean {
    return (this.laneRunning.get(lane) ?? 0) < this.o.laneCap(lane);
  }

  /** Starts calls while slots are free: each time, the least recently served owner with a runnable call. */
  private pump(): void {
    while (this.running < this.o.maxConcurrency) {
      let best: { owner: number; index: number; stamp: number } | undefined;
      for (const [owner, q] of this.queues) {
        const stamp = this.lastServed.get(owner) ?? 0;
        if (best && stamp >= best.stamp) continue;
        const index = q.findIndex((j) => this.laneHasRoom(j.lane));
        if (index >= 0) best = { owner, index, stamp };
      }
      if (!best) return;
      const q = this.queues.get(best.owner)!;
      const [job] = q.splice(best.index, 1);
      if (!q.length) this.queues.delete(best.owner);
      this.lastServed.set(best.owner, ++this.served);
      this.start(job);
    }
  }

  private start(job: Job): void {
    job.signal.removeEventListener('abort', job.onAbort);
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(new CancelledError());
    job.signal.addEventListener('abort', onAbort, { once: true });
    this.controllers.add(controller);
    this.running++;
    this.laneRunning.set(job.lane, (this.laneRunning.get(job.lane) ?? 0) + 1);
    this.runningOf.set(job.owner, (this.runningOf.get(job.owner) ?? 0) + 1);
    const done = (): void => {
      job.signal.removeEventListener('abort', onAbort);
      this.controllers.delete(controller);
      this.running--;
      this.laneRunning.set(job.lane, this.laneRunning.get(job.lane)! - 1);
      const left = this.runningOf.get(job.owner)! - 1;
      if (left) this.runningOf.set(job.owner, left);
      else this.runningOf.delete(job.owner);
      this.idle(job.owner);
      this.pump();
    };
    let p: Promise<unknown>;
    try {
      p = job.run(controller.signal);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (v) => {
        done();
        job.resolve(v);
      },
      (e: unknown) => {
        done();
        job.reject(e);
      },
    );
  }

  /** An owner with nothing waiting or running is forgotten: it comes back as a newcomer. */
  private idle(owner: number): void {
    if (!this.queues.has(owner) && !this.runningOf.has(owner)) this.lastServed.delete(owner);
  }
}
