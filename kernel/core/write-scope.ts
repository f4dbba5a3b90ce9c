/**
 * Group commit for what must be durable before a reply leaves (docs/restart.md): a connection serves
 * the frames of one read inside `writeScope`, its replies corked; stores that write through (the
 * mailbox store) open one transaction for the writes made inside it and commit it when the outermost
 * scope ends — before the connection uncorks, so no reply leaves ahead of what it acknowledges.
 */
let depth = 0;
const flushes = new Set<() => void>();

export function writeScope<T>(fn: () => T): T {
  depth++;
  try {
    return fn();
  } finally {
    if (--depth === 0) for (const f of [...flushes]) f();
  }
}

/** True inside a write scope: a write may join the scope's transaction. */
export function inWriteScope(): boolean {
  return depth > 0;
}

/** `flush` runs once when the current outermost scope ends (a store's COMMIT). */
export function atScopeEnd(flush: () => void): void {
  flushes.add(flush);
}

/** Cancels `atScopeEnd` (the store committed by itself). */
export function cancelScopeEnd(flush: () => void): void {
  flushes.delete(flush);
}
