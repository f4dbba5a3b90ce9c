/**
 * `clove kernel --http HOST:PORT` as a process (needs `npm run build`): the URL with the token in the
 * log, the API answering with it, a bad flag and a taken port as start errors (exit 2, docs/cli.md).
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, startKernelProcess, tempDir, until } from '../../harness/kernel.js';

const bin = path.join(REPO_ROOT, 'bin', 'clove.js');

function kernel(...args: string[]): Promise<{ code: number; err: string }> {
  const dir = tempDir();
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      [bin, '--socket', path.join(dir, 's.sock'), 'kernel', '--data-dir', path.join(dir, 'data'), ...args],
      { timeout: 30_000 },
      (e, _out, err) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, err }),
    ),
  );
}

describe('clove kernel --http', () => {
  it('logs the dashboard URL with the token and serves the API with it', async () => {
    const kp = await startKernelProcess({ extra: ['--http', '127.0.0.1:0', '--log-format', 'json'] });
    try {
      const line = await until(
        () => /dashboard at (http:\/\/127\.0\.0\.1:\d+)\/#token=([0-9a-f]{64})/.exec(kp.stderr()),
        15_000,
        'the URL in the log',
      );
      const [, url, token] = line;
      expect((await fetch(`${url}/api/v1/agents`)).status).toBe(401);
      const ok = await fetch(`${url}/api/v1/agents`, { headers: { authorization: `Bearer ${token}` } });
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual([]);
      expect((await fetch(`${url}/readyz`)).status).toBe(200);
    } finally {
      expect((await kp.stop()).code).toBe(0);
    }
  });

  it('refuses a bad --http and a taken port (exit 2, naming the flag)', async () => {
    const bad = await kernel('--http', 'localhost');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/invalid --http "localhost": use HOST:PORT/);
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const busy = await kernel('--http', `127.0.0.1:${port}`);
      expect(busy.code).toBe(2);
      expect(busy.err).toMatch(new RegExp(`cannot serve HTTP on 127.0.0.1:${port}: .*EADDRINUSE`));
    } finally {
      taken.close();
    }
  });
});
