/**
 * The far end of the IPC benchmark, run as a separate process (`node dist/bench/lib/ipc-peer.js …`):
 *
 *   clove <kernel socket>   connects to the kernel (TS SDK), prints `ready <its id>`, then loops on a
 *                           blocking RECV and answers every message: `{echo:…}` goes straight back to
 *                           its sender; `{i, n}` (a throughput burst) is counted and acknowledged once
 *                           the n-th has arrived.
 *   raw <socket path>       the baseline: listens on a Unix socket and echoes every frame back with the
 *                           same 17-byte framing (no kernel in between), prints `ready 0`.
 *   raw-cork <socket path>  the same, but the replies to the frames of one read leave in one writev.
 */
import fs from 'node:fs';
import net from 'node:net';
import { encodeFrame, FrameDecoder } from '../../protocol/index.js';
import { CloveClient } from '../../sdk/typescript/client.js';

const [mode, sockPath] = process.argv.slice(2);

async function clovePeer(): Promise<void> {
  const c = await CloveClient.connect({ socketPath: sockPath, reconnect: false });
  await c.hello();
  process.stdout.write(`ready ${c.agentId}\n`);
  for (;;) {
    const r = await c.recv({ max: 1000, timeoutMs: 300_000 });
    for (const m of r.messages) {
      const msg = m.message as { echo?: unknown; i?: number; n?: number };
      // Not awaited: the send is pipelined ahead of the next blocking RECV on the same connection.
      if (msg.echo !== undefined) void c.send(m.from, msg);
      else if (msg.n !== undefined && msg.i === msg.n - 1) void c.send(m.from, { done: msg.n });
    }
  }
}

function rawPeer(cork: boolean): void {
  try {
    fs.rmSync(sockPath, { force: true });
  } catch {
    // not there
  }
  const server = net.createServer((s) => {
    const dec = new FrameDecoder(1024 * 1024);
    s.on('data', (chunk: Buffer) => {
      const { frames, error } = dec.push(chunk);
      if (error) return s.destroy();
      // One write per reply, as the kernel's Connection.send does; with `cork`, the replies to one chunk
      // of requests leave in one writev (what the kernel could do: see reports/ipc.md).
      if (cork && frames.length > 1) s.cork();
      for (const f of frames) s.write(encodeFrame(0, f.opcode, f.payload));
      if (cork && frames.length > 1) s.uncork();
    });
    s.on('error', () => s.destroy());
  });
  server.listen(sockPath, () => process.stdout.write('ready 0\n'));
}

process.on('SIGTERM', () => process.exit(0));
if (mode === 'clove') clovePeer().catch((e) => (console.error(e), process.exit(1)));
else if (mode === 'raw') rawPeer(false);
else if (mode === 'raw-cork') rawPeer(true);
else {
  console.error('usage: ipc-peer.js clove|raw <socket>');
  process.exit(2);
}
