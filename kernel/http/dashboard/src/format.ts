/** Display helpers: sizes, percentages, times. */
import type { AgentRow, QuotaMeter } from './api.js';

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

export function percent(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  return `${n.toFixed(1)}%`;
}

export function clock(ms: number): string {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false });
}

/** The quota closest to its limit: what the grid's quota column shows. */
export function worstQuota(a: AgentRow): { name: string; fraction: number; meter: QuotaMeter } | null {
  let worst: { name: string; fraction: number; meter: QuotaMeter } | null = null;
  for (const [name, meter] of Object.entries(a.quotas ?? {})) {
    if (!meter || typeof meter.limit !== 'number' || meter.limit <= 0) continue;
    const fraction = meter.used / meter.limit;
    if (!worst || fraction > worst.fraction) worst = { name, fraction, meter };
  }
  return worst;
}

/** A one-line summary of an event's data for the event panel. */
export function eventSummary(data: Record<string, unknown> | undefined): string {
  if (!data) return '';
  const skip = new Set(['agent_id', 'name', 'agent_name']);
  return Object.entries(data)
    .filter(([k, v]) => !skip.has(k) && v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ')
    .slice(0, 200);
}

export function stateClass(state: string): string {
  switch (state) {
    case 'RUNNING':
      return 'ok';
    case 'PAUSED':
      return 'paused';
    case 'STOPPED':
    case 'FAILED':
      return 'bad';
    default:
      return 'warn';
  }
}
