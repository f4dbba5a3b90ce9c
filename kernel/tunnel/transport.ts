/**
 * Remote wire-protocol sessions through the relay, as a Transport (docs/architecture.md "Adding a
 * transport"). A relay user's `/api/v1/machines/:machine/agent` WebSocket arrives here as a channel of
 * the tunnel; each becomes a stream the server serves like a Unix connection, with a principal of its
 * own: a kernel-assigned id, role client. Never an operator, never an existing agent, whatever the relay
 * or the frames say (hole 15 of the wire reference): the frames' agent_id is ignored as on the socket.
 */
import { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Accept, Transport } from '../core/server.js';
import type { Principal, Principals } from '../core/principals.js';
import { LIMITS } from '../relay/messages.js';

/** A live remote session, as TUNNEL_LIST_REMOTES shows it. */
export interface RemoteInfo {
  agent_id: number;
  name: string;
  user: string;
  connected_at: string;
}

/** The kernel's end of one remote session: bytes in from the relay, and closing it. */
export interface RemoteSession {
  /** Frame bytes the relay user sent. */
  input(data: Buffer): void;
  /** The user went away (or the tunnel did). */
  end(): void;
}

/** What the tunnel gives a session: where its output goes, and how it tells the relay it closed. */
export interface RemotePeer {
  /** Sends reply bytes towards the user; `done` runs when the tunnel took them (backpressure). */
  write(data: Buffer, done: () => void): void;
  closed(): void;
}

export class RelayTransport implements Transport {
  readonly kind = 'relay';
  private accept: Accept | null = null;
  private readonly live = new Map<number, { info: RemoteInfo; stream: Duplex }>();

  constructor(
    private readonly principals: Principals,
    private readonly closing: () => boolean,
    private readonly log: Logger,
  ) {}

  async listen(accept: Accept): Promise<void> {
    this.accept = accept;
  }

  /**
   * Opens a session for relay user `user`; null when the kernel is not accepting. The principal is
   * made here, from the kernel's own id allocator: nothing the relay sends can choose it.
   */
  open(user: string, peer: RemotePeer): RemoteSession | null {
    if (!this.accept || this.closing()) return null;
    const id = this.principals.allocate();
    const principal: Principal = { id, role: 'client', name: `relay:${user}#${id}` };
    const info: RemoteInfo = {
      agent_id: id,
      name: principal.name,
      user,
      connected_at: new Date().toISOString(),
    };
    const stream = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        // The connection's idle-peer probe writes nothing: nothing to carry.
        if (chunk.length === 0) return cb();
        peer.write(chunk, () => cb());
      },
      final(cb) {
        cb();
        stream.destroy();
      },
    });
    this.live.set(id, { info, stream });
    stream.once('close', () => {
      this.live.delete(id);
      peer.closed();
    });
    this.log.info({ conn: id, user }, 'remote session opened through the relay');
    this.accept(stream, principal);
    return {
      input: (data) => {
        if (stream.destroyed) return;
        // The session reads no faster than the kernel serves it: beyond the bound it is closed.
        if (stream.readableLength + data.length > LIMITS.sessionInput) {
          this.log.warn({ conn: id, user }, 'remote session sent more than it reads: closing it');
          stream.destroy();
          return;
        }
        stream.push(data);
      },
      end: () => stream.destroy(),
    };
  }

  /** The live remote sessions (TUNNEL_LIST_REMOTES). */
  list(): RemoteInfo[] {
    return [...this.live.values()].map((s) => ({ ...s.info }));
  }

  /** Closes every remote session (the tunnel closed). */
  dropAll(): void {
    for (const s of [...this.live.values()]) s.stream.destroy();
  }

  close(): void {
    this.accept = null;
    this.dropAll();
  }
}
