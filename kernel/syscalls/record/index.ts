/**
 * Record family: RECORD_START, RECORD_STOP, RECORD_STATUS, REPLAY_START, REPLAY_STATUS
 * (docs/protocol.md "Record and replay"). Recording (recorder.ts) keeps the selected callers' syscalls
 * with their replies; replay (replay.ts) issues a recording's requests again against this kernel as
 * stand-ins of the recorded callers and reports every reply that differs. Operators only: a recording
 * holds what agents said to each other, and a replay acts in their name (the reference's hole #17).
 * Starting and stopping either is audited (SECURITY).
 */
import {
  defineFamily,
  InvalidRequestError,
  InvalidStateError,
  NotSupportedError,
  PermissionDeniedError,
  type Caller,
} from '../../core/family.js';
import { Recorder } from './recorder.js';
import {
  entryBytes,
  fromRecording,
  importRecording,
  Replay,
  REPLAY_MAX_BYTES,
  REPLAY_MAX_ENTRIES,
  type ReplayEntry,
} from './replay.js';

/** RECORD_STATUS `get_entries` returns at most this many entries. */
const PAGE_MAX = 1000;

function operatorOnly(caller: Caller, what: string): void {
  if (caller.role !== 'operator')
    throw new PermissionDeniedError(`Permission denied: ${what} is for operators only`);
}

export default defineFamily(({ services, observe, dispatchAs }) => {
  const { audit } = services;
  /** The replay running, or the last one (its final status stays readable). */
  let replay: Replay | null = null;
  let serial = 0;
  /** Chunks of a recording being loaded (REPLAY_START `more`). */
  let loading: ReplayEntry[] = [];
  let loadingBytes = 0;
  // The replay's own calls are never recorded.
  const recorder = new Recorder((id) => replay?.owns(id) ?? false);
  observe((r) => recorder.observe(r));

  const note = (caller: Caller, event_type: string, details: Record<string, unknown>) =>
    audit.record({
      category: 'SECURITY',
      event_type,
      agent_id: caller.id,
      agent_name: caller.name,
      success: true,
      details,
    });

  const recordingStatus = () => ({
    success: true as const,
    recording: recorder.recording,
    paused: false as const,
    state: recorder.recording ? ('RECORDING' as const) : ('IDLE' as const),
    entry_count: recorder.entries.length,
    entries_dropped: recorder.entriesDropped,
    last_sequence_id: recorder.lastSequenceId,
    bytes: recorder.bytes,
    ...recorder.config,
  });

  return {
    name: 'record',
    handlers: {
      RECORD_START: ({ caller }, req) => {
        operatorOnly(caller, 'recording');
        if (recorder.recording)
          throw new InvalidStateError('already recording', { recording: true, state: 'RECORDING' });
        const cfg = {
          include_think: req.include_think,
          include_http: req.include_http,
          include_exec: req.include_exec,
          max_entries: req.max_entries,
          max_bytes: req.max_bytes,
          filter_agents: [...new Set((req.filter_agents ?? []).filter((id) => id > 0))],
          filter_names: [...new Set(req.filter_names ?? [])],
        };
        recorder.start(cfg);
        note(caller, 'RECORDING_STARTED', { started_by: caller.id, ...cfg });
        return { success: true, recording: true, state: 'RECORDING' };
      },
      RECORD_STOP: ({ caller }) => {
        operatorOnly(caller, 'recording');
        const counts = {
          entries_recorded: recorder.entries.length,
          entries_dropped: recorder.entriesDropped,
        };
        if (!recorder.recording)
          throw new InvalidStateError('not recording', { recording: false, state: 'IDLE', ...counts });
        recorder.stop();
        note(caller, 'RECORDING_STOPPED', { stopped_by: caller.id, ...counts });
        return { success: true, recording: false, state: 'IDLE', ...counts };
      },
      RECORD_STATUS: ({ caller }, req) => {
        operatorOnly(caller, 'a recording');
        return {
          ...recordingStatus(),
          ...(req.export ? { recording_data: JSON.stringify(recorder.entries) } : {}),
          ...(req.get_entries ? { entries: recorder.page(req.since_id, Math.min(PAGE_MAX, req.limit)) } : {}),
        };
      },
      REPLAY_START: ({ caller }, req) => {
        operatorOnly(caller, 'replay');
        if (!dispatchAs)
          throw new NotSupportedError('replay needs a dispatcher that can dispatch as a stand-in');
        if (replay?.state === 'running') throw new InvalidStateError('Replay already in progress');
        let entries: ReplayEntry[];
        if (req.recording_data !== undefined) {
          const chunk = importRecording(req.recording_data, loading.length);
          const bytes = chunk.reduce((n, e) => n + entryBytes(e), 0);
          if (loading.length + chunk.length > REPLAY_MAX_ENTRIES || loadingBytes + bytes > REPLAY_MAX_BYTES) {
            loading = [];
            loadingBytes = 0;
            throw new InvalidRequestError(
              `Failed to import recording data: more than ${REPLAY_MAX_ENTRIES} entries or ${REPLAY_MAX_BYTES} bytes`,
            );
          }
          for (const e of chunk) loading.push(e);
          loadingBytes += bytes;
          if (req.more) return { success: true, total_entries: loading.length, state: 'idle' };
          entries = loading;
        } else if (req.more) {
          throw new InvalidRequestError('invalid request: `more` needs recording_data');
        } else if (loading.length) {
          entries = loading; // chunks were loaded; this call only starts them
        } else {
          if (!recorder.entries.length) throw new InvalidRequestError('No recording loaded');
          entries = fromRecording(recorder.entries);
        }
        loading = [];
        loadingBytes = 0;
        const run = (replay = new Replay(entries, services, dispatchAs, ++serial));
        note(caller, 'REPLAY_STARTED', { started_by: caller.id, total_entries: entries.length });
        run.start((r) => {
          const s = r.status();
          note(caller, 'REPLAY_FINISHED', {
            started_by: caller.id,
            state: s.state,
            total_entries: s.total_entries,
            entries_replayed: s.entries_replayed,
            entries_skipped: s.entries_skipped,
            mismatches: s.mismatches,
            ...(s.last_error ? { last_error: s.last_error } : {}),
          });
        });
        return { success: true, total_entries: entries.length, state: 'running' };
      },
      REPLAY_STATUS: ({ caller }) => {
        operatorOnly(caller, 'replay');
        if (replay) return { success: true, ...replay.status() };
        return {
          success: true,
          state: 'idle',
          total_entries: loading.length,
          current_entry: 0,
          entries_replayed: 0,
          entries_skipped: 0,
          progress_percent: 0,
          mismatches: 0,
          mismatch_details: [],
          skipped_ops: {},
        };
      },
    },
    close: async () => {
      recorder.stop();
      await replay?.stop();
    },
  };
});
