import { KERNEL_VERSION } from '../version.js';
import { PROTOCOL_VERSION } from '../protocol/frame.js';
import type { HandlerTable } from './index.js';

export const core: HandlerTable = {
  NOOP: { raw: true, fn: (_k, _c, p) => Buffer.from(p) },
  HELLO: {
    fn: (k, c) => ({
      success: true,
      protocol_version: PROTOCOL_VERSION,
      kernel_version: KERNEL_VERSION,
      agent_id: c.principal.id,
      role: c.principal.role,
      name: c.principal.name,
      features: {
        llm_in_kernel: false,
        sys_think_stub: true,
        async_default_exec_http: true,
        blocking_recv: true,
        heartbeat: true,
        max_payload: k.opts.maxPayload,
      },
      sandbox: k.sandbox.summary,
      ...(c.principal.role === 'operator'
        ? { data_dir: k.opts.dataDir, agent_socket: k.agentSocketPath }
        : {}),
    }),
  },
  EXIT: { raw: true, fn: () => 'goodbye' },
  HEARTBEAT: {
    fn: (k, c) => {
      k.supervisor.heartbeat(c.principal.id);
      return { success: true };
    },
  },
};
