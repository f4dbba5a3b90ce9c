/** Core family: NOOP, HELLO, EXIT, HEARTBEAT. */
import { PROTOCOL_VERSION } from '../../../protocol/index.js';
import { defineFamily, pushMode, setPush } from '../../core/family.js';

export default defineFamily(({ services }) => ({
  name: 'core',
  handlers: {
    NOOP: (_ctx, payload) => Buffer.from(payload),
    HELLO: ({ caller, push }, req) => {
      const k = services.kernel;
      if (caller.role === 'agent') services.agents.saidHello(caller.id);
      // `push` (absent: unchanged) sets what this connection is sent unasked; a call without a socket has none.
      if (req.push && push) {
        setPush(
          push,
          caller.id,
          {
            messages: req.push.messages === true,
            events: req.push.events === true,
            ...(req.push.batch === true ? { batch: true } : {}),
            ...(req.push.format === 'binary' ? { format: 'binary' as const } : {}),
          },
          {
            mail: services.mail,
            events: services.events,
            maxBytes: k.maxReplyBytes,
            received: (n) => {
              services.principals.stats(caller.id).received += n;
            },
          },
        );
      }
      return {
        success: true,
        protocol_version: PROTOCOL_VERSION,
        kernel_version: k.version,
        agent_id: caller.id,
        role: caller.role,
        name: caller.name,
        features: {
          llm_in_kernel: true,
          sys_think_stub: false,
          // Unlike the public kernel, EXEC/HTTP/THINK are synchronous unless `async: true` is asked.
          async_default_exec_http: false,
          async_results_opcode: 0x88,
          blocking_recv: true,
          heartbeat: true,
          max_payload: k.maxPayload,
          push: true,
        },
        push: pushMode(push),
        sandbox: k.sandbox,
        ...(caller.role === 'operator'
          ? { data_dir: k.dataDir, agent_socket: k.agentSocket }
          : { budgets: services.principals.budgets(caller.id) }),
      };
    },
    EXIT: () => 'goodbye',
    // Every syscall is a heartbeat (the dispatcher records it); this one does nothing else.
    HEARTBEAT: () => ({ success: true }),
  },
}));
