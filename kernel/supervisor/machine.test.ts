import { describe, expect, it } from 'vitest';
import { EVENTS, STATES, TABLE, transition, isRefusal, type Event, type State } from './machine.js';

// The expected lifecycle, written out a second time: every state × event cell, so that any change to
// the table must be made here too, deliberately. '-' is a refusal.
const X = '-';
const EXPECTED: Record<State, Record<Event, string>> = {
  STARTING: {
    started: 'RUNNING: arm_timers emit_started',
    exit_restart: 'BACKOFF: disarm_timers emit_exited schedule_restart',
    exit_final: 'STOPPED: disarm_timers emit_exited release',
    exit_escalate: 'FAILED: disarm_timers emit_exited escalate',
    kill: 'STOPPING: arm_grace',
    restart: 'RESTARTING: arm_grace',
    pause: X,
    resume: X,
    backoff_elapsed: X,
    grace_elapsed: X,
    uptime_reached: X,
    watchdog_expired: X,
  },
  RUNNING: {
    started: X,
    exit_restart: 'BACKOFF: disarm_timers emit_exited schedule_restart',
    exit_final: 'STOPPED: disarm_timers emit_exited release',
    exit_escalate: 'FAILED: disarm_timers emit_exited escalate',
    kill: 'STOPPING: disarm_timers sigterm arm_grace',
    restart: 'RESTARTING: disarm_timers sigterm arm_grace',
    pause: 'PAUSED: disarm_watchdog sigstop emit_paused',
    resume: X,
    backoff_elapsed: X,
    grace_elapsed: X,
    uptime_reached: 'RUNNING: reset_failures',
    watchdog_expired: 'RUNNING: sigkill',
  },
  PAUSED: {
    started: X,
    exit_restart: 'BACKOFF: disarm_timers emit_exited schedule_restart',
    exit_final: 'STOPPED: disarm_timers emit_exited release',
    exit_escalate: 'FAILED: disarm_timers emit_exited escalate',
    kill: 'STOPPING: disarm_timers sigterm sigcont arm_grace',
    restart: 'RESTARTING: disarm_timers sigterm sigcont arm_grace',
    pause: X,
    resume: 'RUNNING: sigcont arm_watchdog emit_resumed',
    backoff_elapsed: X,
    grace_elapsed: X,
    uptime_reached: 'PAUSED: reset_failures',
    watchdog_expired: X,
  },
  STOPPING: {
    started: 'STOPPING: sigterm',
    exit_restart: 'STOPPED: disarm_timers emit_exited release',
    exit_final: 'STOPPED: disarm_timers emit_exited release',
    exit_escalate: 'STOPPED: disarm_timers emit_exited release',
    kill: 'STOPPING: ',
    restart: X,
    pause: X,
    resume: X,
    backoff_elapsed: X,
    grace_elapsed: 'STOPPING: sigkill',
    uptime_reached: X,
    watchdog_expired: X,
  },
  RESTARTING: {
    started: 'RESTARTING: sigterm',
    exit_restart: 'STARTING: disarm_timers emit_exited count_restart start',
    exit_final: 'STARTING: disarm_timers emit_exited count_restart start',
    exit_escalate: 'STARTING: disarm_timers emit_exited count_restart start',
    kill: 'STOPPING: ',
    restart: 'RESTARTING: ',
    pause: X,
    resume: X,
    backoff_elapsed: X,
    grace_elapsed: 'RESTARTING: sigkill',
    uptime_reached: X,
    watchdog_expired: X,
  },
  BACKOFF: {
    started: X,
    exit_restart: X,
    exit_final: X,
    exit_escalate: X,
    kill: 'STOPPED: cancel_restart release',
    restart: 'STARTING: cancel_restart reset_failures start',
    pause: X,
    resume: X,
    backoff_elapsed: 'STARTING: start',
    grace_elapsed: X,
    uptime_reached: X,
    watchdog_expired: X,
  },
  STOPPED: Object.fromEntries(EVENTS.map((e) => [e, X])) as Record<Event, string>,
  FAILED: {
    ...(Object.fromEntries(EVENTS.map((e) => [e, X])) as Record<Event, string>),
    kill: 'STOPPED: release',
  },
};

describe('agent lifecycle table', () => {
  for (const s of STATES) {
    for (const e of EVENTS) {
      it(`${s} × ${e}`, () => {
        const c = transition(s, e);
        const got = isRefusal(c) ? X : `${c.next}: ${c.actions.join(' ')}`;
        expect(got).toBe(EXPECTED[s][e]);
        if (isRefusal(c)) expect(c.refused).toMatch(new RegExp(s));
      });
    }
  }

  it('has no cell for an unknown state or event', () => {
    expect(Object.keys(TABLE).sort()).toEqual([...STATES].sort());
    for (const s of STATES) for (const e of Object.keys(TABLE[s])) expect(EVENTS).toContain(e);
  });
});
