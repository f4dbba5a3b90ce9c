/**
 * Tunnel family: TUNNEL_CONNECT, TUNNEL_DISCONNECT, TUNNEL_STATUS, TUNNEL_LIST_REMOTES, TUNNEL_CONFIG
 * (wire reference §3.12, docs/relay.md). Only operators may use it: pointing the kernel at a relay hands
 * that relay's users operator rights over the kernel's API, so an agent or client that could do it
 * could raise its own rights (hole 15). Their refusals are audited by the dispatcher.
 */
import {
  defineFamily,
  InvalidRequestError,
  PermissionDeniedError,
  TunnelConnectError,
  TunnelFailedError,
  type Caller,
} from '../../core/family.js';

/** Throws permission_denied unless the caller is an operator. */
function operatorOnly(caller: Caller, op: string): void {
  if (caller.role !== 'operator')
    throw new PermissionDeniedError(`permission denied: ${op} is for operators only`);
}

export default defineFamily(({ services }) => {
  const { client, remotes } = services.tunnel;
  /** Settings from a request's fields (only those given), checked before anything changes. */
  const settings = (req: {
    relay_url?: string;
    machine_id?: string;
    token?: string;
    reconnect_interval?: number;
  }) => {
    const s = {
      ...(req.relay_url !== undefined ? { relayUrl: req.relay_url } : {}),
      ...(req.machine_id !== undefined ? { machineId: req.machine_id } : {}),
      ...(req.token !== undefined ? { token: req.token } : {}),
      ...(req.reconnect_interval !== undefined
        ? { reconnectInterval: Math.max(1, req.reconnect_interval) }
        : {}),
    };
    try {
      client.configure(s);
    } catch (e) {
      throw new InvalidRequestError(`invalid request: ${(e as Error).message}`);
    }
  };
  return {
    name: 'tunnel',
    handlers: {
      TUNNEL_CONNECT: async ({ caller }, req) => {
        operatorOnly(caller, 'TUNNEL_CONNECT');
        settings(req);
        const st = client.status();
        if (!st.relay_url) throw new InvalidRequestError('invalid request: relay_url required');
        if (!st.machine_id) throw new InvalidRequestError('invalid request: machine_id required');
        try {
          await client.connect(true);
        } catch (e) {
          if (e instanceof TunnelConnectError)
            throw new TunnelFailedError(`cannot connect to the relay: ${e.message}`, { reason: e.reason });
          throw new InvalidRequestError(`invalid request: ${(e as Error).message}`);
        }
        return { success: true, relay_url: st.relay_url, machine_id: st.machine_id };
      },
      TUNNEL_DISCONNECT: ({ caller }) => {
        operatorOnly(caller, 'TUNNEL_DISCONNECT');
        client.disconnect();
        return { success: true };
      },
      TUNNEL_STATUS: ({ caller }) => {
        operatorOnly(caller, 'TUNNEL_STATUS');
        return { success: true, ...client.status() };
      },
      TUNNEL_LIST_REMOTES: ({ caller }) => {
        operatorOnly(caller, 'TUNNEL_LIST_REMOTES');
        const agents = remotes.list();
        return { success: true, agents, count: agents.length };
      },
      TUNNEL_CONFIG: ({ caller }, req) => {
        operatorOnly(caller, 'TUNNEL_CONFIG');
        settings(req);
        return { success: true };
      },
    },
    close: () => client.close(),
  };
});
