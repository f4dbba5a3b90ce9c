/**
 * `clove relay` and `clove tunnel` as processes (needs `npm run build`): tokens made with the CLI, a
 * relay process, a kernel process started with --relay that the relay lists and forwards to, the tunnel
 * commands, the dashboard served at the relay's `/`, and usage errors (docs/cli.md, docs/relay.md).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, startKernelProcess, tempDir, until, type KernelProcess } from '../../harness/kernel.js';
import { freePort, waitForPort } from '../../harness/services.js';

const bin = path.join(REPO_ROOT, 'bin', 'clove.js');

function clove(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [bin, ...args], { timeout: 30_000 }, (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    ),
  );
}

const dir = tempDir('rcli');
const relayDir = path.join(dir, 'relay');
let relay: ChildProcess | undefined;
let kp: KernelProcess | undefined;

afterAll(async () => {
  await kp?.stop();
  if (relay && relay.exitCode === null) {
    relay.kill('SIGTERM');
    await new Promise((r) => relay!.once('exit', r));
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('clove relay and clove tunnel', () => {
  it('tokens, a relay process, a kernel started with --relay, steering it and the tunnel commands', async () => {
    const m = await clove('relay', '--data-dir', relayDir, 'token', 'add', '--machine', 'box1');
    expect(m.code).toBe(0);
    const machineToken = m.out.trim();
    expect(machineToken).toMatch(/^clove_m_[0-9a-f]{64}$/);
    const u = await clove(
      'relay',
      'token',
      'add',
      '--user',
      'ops',
      '--machines',
      'box1',
      '--data-dir',
      relayDir,
    );
    const userToken = u.out.trim();
    const list = JSON.parse((await clove('relay', '--data-dir', relayDir, 'token', 'list', '--json')).out);
    expect(list).toEqual([
      expect.objectContaining({ kind: 'machine', name: 'box1' }),
      expect.objectContaining({ kind: 'user', name: 'ops', machines: ['box1'] }),
    ]);
    expect(JSON.stringify(list)).not.toContain(machineToken.slice(8));
    expect(fs.statSync(path.join(relayDir, 'tokens.json')).mode & 0o777).toBe(0o600);

    const port = await freePort();
    relay = spawn(process.execPath, [bin, 'relay', '--listen', `127.0.0.1:${port}`, '--data-dir', relayDir], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const exited = new Promise((r) => relay!.once('exit', r));
    await waitForPort(port, 15_000, exited);

    const tokenFile = path.join(dir, 'box1.token');
    fs.writeFileSync(tokenFile, `${machineToken}\n`, { mode: 0o600 });
    kp = await startKernelProcess({
      extra: ['--relay', `http://127.0.0.1:${port}`, '--machine-id', 'box1', '--relay-token-file', tokenFile],
    });
    const auth = { authorization: `Bearer ${userToken}` };
    const machines = await until(
      async () => {
        const r = await fetch(`http://127.0.0.1:${port}/api/v1/machines`, { headers: auth });
        const body = (await r.json()) as { machines: { id: string; connected: boolean }[] };
        return body.machines.find((x) => x.id === 'box1' && x.connected) ? body : null;
      },
      20_000,
      'box1 to be listed',
    );
    expect(machines.machines).toHaveLength(1);
    const agents = await fetch(`http://127.0.0.1:${port}/api/v1/machines/box1/agents`, { headers: auth });
    expect(agents.status).toBe(200);
    expect(await agents.json()).toEqual([]);

    const status = await clove('--socket', kp.socketPath, 'tunnel', 'status', '--json');
    expect(JSON.parse(status.out)).toMatchObject({
      connected: true,
      machine_id: 'box1',
      relay_url: `http://127.0.0.1:${port}`,
    });
    expect((await clove('--socket', kp.socketPath, 'tunnel', 'remotes', '--json')).out.trim()).toBe('[]');
    expect((await clove('--socket', kp.socketPath, 'tunnel', 'disconnect')).code).toBe(0);
    expect(
      JSON.parse((await clove('--socket', kp.socketPath, 'tunnel', 'status', '--json')).out),
    ).toMatchObject({
      connected: false,
      state: 'stopped',
    });
    const again = await clove('--socket', kp.socketPath, 'tunnel', 'connect', '--token-file', tokenFile);
    expect(again.out).toMatch(/connected to http:\/\/127\.0\.0\.1:\d+ as box1/);

    // The dashboard is served at the relay's `/` (built by npm run build), without a token.
    const page = await fetch(`http://127.0.0.1:${port}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);

    // Revoking by id works beside the running relay; the kernel's tunnel then stops for good.
    const id = list[0].id as string;
    expect((await clove('relay', '--data-dir', relayDir, 'token', 'revoke', id)).out).toMatch(
      /revoked 1 token/,
    );
    await until(
      async () =>
        JSON.parse((await clove('--socket', kp!.socketPath, 'tunnel', 'status', '--json')).out).state ===
        'stopped',
      20_000,
      'the tunnel to stop',
    );
  }, 120_000);

  it('usage errors: --relay without its companions, relay without --listen, a token of no kind', async () => {
    const k = await clove('--socket', path.join(dir, 'x.sock'), 'kernel', '--relay', 'ws://127.0.0.1:1');
    expect(k.code).toBe(2);
    expect(k.err).toMatch(/--relay, --machine-id and --relay-token-file go together/);
    const r = await clove('relay', '--data-dir', relayDir);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/needs --listen/);
    const t = await clove('relay', '--data-dir', relayDir, 'token', 'add');
    expect(t.code).toBe(2);
    const bad = await clove('relay', '--data-dir', relayDir, 'token', 'add', '--machine', 'a/b');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/not a valid name/);
    const missing = await clove(
      '--socket',
      path.join(dir, 'y.sock'),
      'kernel',
      '--data-dir',
      path.join(dir, 'kd'),
      '--relay',
      'ws://127.0.0.1:1',
      '--machine-id',
      'x',
      '--relay-token-file',
      path.join(dir, 'nope'),
    );
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/cannot read the relay token file/);
  }, 60_000);
});
