/**
 * Per-agent budgets (docs/protocol.md "Budgets"): what one agent may hold of the kernel's memory, file
 * descriptors, names, subscriptions and state. The defaults come from the kernel's configuration; a
 * SPAWN may set an agent's own, and an agent can give its child at most what it has itself.
 */
import { SCHEMA_DEFS, type Budgets as BudgetsRequest } from '../../protocol/index.js';
import { PermissionDeniedError, QuotaExceededError } from './errors.js';

export type Budgets = Required<BudgetsRequest>;
export type BudgetName = keyof Budgets;

export const BUDGET_NAMES: readonly BudgetName[] = [
  'mailbox_messages',
  'mailbox_bytes',
  'outbox_bytes',
  'event_queue_events',
  'event_queue_bytes',
  'connections',
  'names',
  'subscriptions',
  'state_keys',
  'state_bytes',
  'async_requests',
  'tasks',
  'journal_bytes',
];

/** The defaults, as the contract states them (`x-default` in protocol/wire.json `Budgets`). */
export const DEFAULT_BUDGETS: Readonly<Budgets> = Object.freeze(
  Object.fromEntries(
    Object.entries(
      (SCHEMA_DEFS.$defs.Budgets as { properties: Record<string, { 'x-default': number }> }).properties,
    ).map(([k, v]) => [k, v['x-default']]),
  ) as unknown as Budgets,
);

/**
 * An operator's budgets: nothing limits what it does itself, but what others queue for it (its mailbox,
 * its event queue) is bounded like anybody's, since that is the senders' doing.
 */
export function operatorBudgets(defaults: Budgets): Budgets {
  const inbound = ['mailbox_messages', 'mailbox_bytes', 'event_queue_events', 'event_queue_bytes'];
  return Object.fromEntries(
    BUDGET_NAMES.map((k) => [k, inbound.includes(k) ? defaults[k] : Number.POSITIVE_INFINITY]),
  ) as unknown as Budgets;
}

/**
 * A new agent's budgets: the kernel's defaults, overridden by what SPAWN asked for. Unless the caller is
 * an operator, nothing may exceed the caller's own budgets (the defaults are capped by them too).
 */
export function budgetsFor(
  defaults: Budgets,
  requested: BudgetsRequest | undefined,
  parent: Budgets | null,
): Budgets {
  const out = { ...defaults };
  for (const k of BUDGET_NAMES) {
    const want = requested?.[k];
    if (want !== undefined) {
      if (parent && want > parent[k])
        throw new PermissionDeniedError(
          `Permission denied: budget ${k} of ${want} exceeds the caller's own (${parent[k]})`,
        );
      out[k] = want;
    } else if (parent) out[k] = Math.min(out[k], parent[k]);
  }
  return out;
}

/** The error for a budget exceeded by `adding` (the reply says which budget, the limit and the use). */
export function overBudget(
  budget: BudgetName | 'kernel_queued_bytes',
  used: number,
  limit: number,
  what: string,
): never {
  throw new QuotaExceededError(`quota exceeded: ${what} (budget ${budget}: ${used} of ${limit})`, {
    budget,
    used,
    limit,
  });
}
