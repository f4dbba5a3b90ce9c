/**
 * Audit family: GET_AUDIT_LOG, SET_AUDIT_CONFIG (docs/protocol.md "Audit"), over the audit log service
 * (kernel/audit/log.ts). Operators only: an agent or client is refused (`permission_denied`, which the
 * dispatcher audits like every denial), so no agent can read what was recorded about it or switch the
 * recording off (the reference's hole #17). A configuration change is always audited, whatever the
 * switches say after it. With `log_syscalls` on, every finished syscall becomes a SYSCALL entry.
 */
import {
  defineFamily,
  InvalidRequestError,
  PermissionDeniedError,
  type Caller,
  type SyscallRecord,
} from '../../core/family.js';

/** A request is copied into its SYSCALL entry when its JSON text is at most this long; else its size is. */
const SMALL_REQUEST = 256;

function operatorOnly(caller: Caller, what: string): void {
  if (caller.role !== 'operator')
    throw new PermissionDeniedError(`Permission denied: ${what} is for operators only`);
}

/** The details of a SYSCALL entry: what was called, how long it took, how it failed; small requests. */
function syscallDetails(r: SyscallRecord): Record<string, unknown> {
  const d: Record<string, unknown> = { syscall: r.op, duration_us: r.durationUs };
  if (!r.success) d.code = (r.reply as { code?: unknown } | null)?.code ?? 'internal';
  if (Buffer.isBuffer(r.request)) d.request_bytes = r.request.length;
  else {
    const text = JSON.stringify(r.request) ?? '';
    if (text.length <= SMALL_REQUEST) d.request = r.request;
    else d.request_bytes = Buffer.byteLength(text);
  }
  return d;
}

export default defineFamily(({ services, observe }) => {
  const { audit } = services;
  observe((r) => {
    if (!audit.enabled('SYSCALL')) return;
    audit.record({
      category: 'SYSCALL',
      event_type: 'SYSCALL',
      agent_id: r.caller.id,
      agent_name: r.caller.name,
      success: r.success,
      details: syscallDetails(r),
    });
  });
  return {
    name: 'audit',
    handlers: {
      GET_AUDIT_LOG: ({ caller }, req) => {
        operatorOnly(caller, 'the audit log');
        let category;
        if (req.category?.trim()) {
          category = audit.category(req.category);
          if (!category)
            throw new InvalidRequestError(
              `invalid request: unknown category ${JSON.stringify(req.category)} (one of ${audit.categories.join(', ')})`,
            );
        }
        const { entries, more } = audit.query({
          category,
          agentId: req.agent_id,
          eventType: req.event_type,
          since: req.since_id,
          limit: req.limit,
        });
        return { success: true, count: entries.length, entries, more };
      },
      SET_AUDIT_CONFIG: ({ caller }, req) => {
        operatorOnly(caller, 'the audit configuration');
        const before = audit.config;
        const config = audit.configure(req);
        const changes = Object.fromEntries(
          Object.entries(config).filter(([k, v]) => before[k as keyof typeof before] !== v),
        );
        // Always recorded: switching security logging off must not hide that it was switched off.
        audit.record(
          {
            category: 'SECURITY',
            event_type: 'AUDIT_CONFIG_CHANGED',
            agent_id: caller.id,
            agent_name: caller.name,
            success: true,
            details: { changed_by: caller.id, changes, new_config: config },
          },
          { force: true },
        );
        return { success: true, config };
      },
    },
  };
});
