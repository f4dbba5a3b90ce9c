/**
 * The agent lifecycle as an explicit state × event table, in the manner of s6-supervise: every cell
 * names the next state and the actions to run, and a missing cell is a refusal, not a surprise.
 * The supervisor classifies an exit into `exit_restart`, `exit_final` or `exit_escalate` (policy,
 * restart intensity) before it looks the cell up, so that the table itself stays free of guards.
 */
export const STATES = [
  'STARTING',
  'RUNNING',
  'PAUSED',
  'STOPPING',
  'RESTARTING',
  'BACKOFF',
  'STOPPED',
  'FAILED',
] as const;
export type State = (typeof STATES)[number];

export const EVENTS = [
  'started',
  'exit_restart',
  'exit_final',
  'exit_escalate',
  'kill',
  'restart',
  'pause',
  'resume',
  'backoff_elapsed',
  'grace_elapsed',
  'uptime_reached',
  'watchdog_expired',
] as const;
export type Event = (typeof EVENTS)[number];

export type Action =
  | 'arm_timers' // uptime timer (reset failure count) and watchdog
  | 'disarm_timers'
  | 'arm_watchdog'
  | 'disarm_watchdog'
  | 'sigterm'
  | 'sigkill'
  | 'sigstop'
  | 'sigcont'
  | 'arm_grace'
  | 'schedule_restart'
  | 'count_restart' // a restart asked for (RESTART): counted and announced, started at once
  | 'cancel_restart'
  | 'start'
  | 'reset_failures'
  | 'escalate'
  | 'release'
  | 'emit_started'
  | 'emit_exited'
  | 'emit_paused'
  | 'emit_resumed';

export interface Cell {
  next: State;
  actions: Action[];
}

/** Why a request was refused in a given state (the cell is absent). */
export interface Refusal {
  refused: string;
}

const exitCells = {
  exit_restart: { next: 'BACKOFF', actions: ['disarm_timers', 'emit_exited', 'schedule_restart'] },
  exit_final: { next: 'STOPPED', actions: ['disarm_timers', 'emit_exited', 'release'] },
  exit_escalate: { next: 'FAILED', actions: ['disarm_timers', 'emit_exited', 'escalate'] },
} as const satisfies Partial<Record<Event, Cell>>;

export const TABLE: Record<State, Partial<Record<Event, Cell>>> = {
  STARTING: {
    started: { next: 'RUNNING', actions: ['arm_timers', 'emit_started'] },
    ...exitCells,
    kill: { next: 'STOPPING', actions: ['arm_grace'] },
    restart: { next: 'RESTARTING', actions: ['arm_grace'] },
  },
  RUNNING: {
    ...exitCells,
    kill: { next: 'STOPPING', actions: ['disarm_timers', 'sigterm', 'arm_grace'] },
    restart: { next: 'RESTARTING', actions: ['disarm_timers', 'sigterm', 'arm_grace'] },
    pause: { next: 'PAUSED', actions: ['disarm_watchdog', 'sigstop', 'emit_paused'] },
    uptime_reached: { next: 'RUNNING', actions: ['reset_failures'] },
    watchdog_expired: { next: 'RUNNING', actions: ['sigkill'] },
  },
  PAUSED: {
    ...exitCells,
    kill: { next: 'STOPPING', actions: ['disarm_timers', 'sigterm', 'sigcont', 'arm_grace'] },
    restart: { next: 'RESTARTING', actions: ['disarm_timers', 'sigterm', 'sigcont', 'arm_grace'] },
    resume: { next: 'RUNNING', actions: ['sigcont', 'arm_watchdog', 'emit_resumed'] },
    uptime_reached: { next: 'PAUSED', actions: ['reset_failures'] },
  },
  STOPPING: {
    // A start that completes after KILL was asked for: stop it at once.
    started: { next: 'STOPPING', actions: ['sigterm'] },
    exit_restart: { next: 'STOPPED', actions: ['disarm_timers', 'emit_exited', 'release'] },
    exit_final: { next: 'STOPPED', actions: ['disarm_timers', 'emit_exited', 'release'] },
    exit_escalate: { next: 'STOPPED', actions: ['disarm_timers', 'emit_exited', 'release'] },
    kill: { next: 'STOPPING', actions: [] },
    grace_elapsed: { next: 'STOPPING', actions: ['sigkill'] },
  },
  // RESTART asked for: the process is stopped like KILL, then started again whatever the policy.
  RESTARTING: {
    started: { next: 'RESTARTING', actions: ['sigterm'] },
    exit_restart: { next: 'STARTING', actions: ['disarm_timers', 'emit_exited', 'count_restart', 'start'] },
    exit_final: { next: 'STARTING', actions: ['disarm_timers', 'emit_exited', 'count_restart', 'start'] },
    exit_escalate: { next: 'STARTING', actions: ['disarm_timers', 'emit_exited', 'count_restart', 'start'] },
    kill: { next: 'STOPPING', actions: [] },
    restart: { next: 'RESTARTING', actions: [] },
    grace_elapsed: { next: 'RESTARTING', actions: ['sigkill'] },
  },
  BACKOFF: {
    backoff_elapsed: { next: 'STARTING', actions: ['start'] },
    restart: { next: 'STARTING', actions: ['cancel_restart', 'reset_failures', 'start'] },
    kill: { next: 'STOPPED', actions: ['cancel_restart', 'release'] },
  },
  STOPPED: {},
  FAILED: {
    // KILL of an escalated agent removes its record.
    kill: { next: 'STOPPED', actions: ['release'] },
  },
};

export function transition(state: State, event: Event): Cell | Refusal {
  const cell = TABLE[state][event];
  if (cell) return cell;
  return { refused: `cannot ${event.replace(/_/g, ' ')} an agent that is ${state}` };
}

export function isRefusal(c: Cell | Refusal): c is Refusal {
  return 'refused' in c;
}
