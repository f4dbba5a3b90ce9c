/**
 * The dashboard in fleet mode: a real relay process (`clove relay`) serves the page, a real kernel
 * process dials it (`clove kernel --relay … --machine-id m1`), and chromium opens the relay's page
 * with a relay user token. The page finds it is on a relay (GET /api/v1/machines answers 200), lists
 * the machine, shows its agents through /api/v1/machines/m1/… and its stream, restarts an agent
 * through the relay (a new pid, seen in the page and by the kernel), and refuses a machine token at
 * the prompt. Needs `npm run build`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import {
  REPO_ROOT,
  startKernelProcess,
  tempDir,
  until,
  type KernelProcess,
} from '../../../harness/kernel.js';
import { freePort } from '../../../harness/services.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';

const CHROMIUM = '/usr/bin/chromium';
const BIN = path.join(REPO_ROOT, 'bin', 'clove.js');
const WAIT = { timeout: 60_000, interval: 100 };
const AGENT = [
  'from clove_sdk import CloveClient',
  'c = CloveClient()',
  'print("ready", flush=True)',
  'while True:',
  '    c.wait_message(timeout=30)',
].join('\n');

function clove(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    );
  });
}

async function addToken(dir: string, kind: 'machine' | 'user', name: string): Promise<string> {
  const r = await clove('relay', 'token', 'add', `--${kind}`, name, '--data-dir', dir, '--json');
  expect(r.code, r.err).toBe(0);
  return (JSON.parse(r.out) as { token: string }).token;
}

describe.runIf(fs.existsSync(CHROMIUM))('the dashboard in fleet mode, served by a relay', () => {
  let relay: ChildProcess;
  let relayErr = '';
  let kp: KernelProcess;
  let client: CloveClient;
  let browser: Browser;
  let base: string;
  let userToken: string;
  let machineToken: string;

  beforeAll(async () => {
    const dir = tempDir();
    const relayDir = path.join(dir, 'relay');
    machineToken = await addToken(relayDir, 'machine', 'm1');
    userToken = await addToken(relayDir, 'user', 'ops');
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    relay = spawn(
      process.execPath,
      [BIN, 'relay', '--listen', `127.0.0.1:${port}`, '--data-dir', relayDir, '--log-level', 'error'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    relay.stderr!.on('data', (d) => (relayErr += d));
    await until(
      async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok,
      20_000,
      'the relay',
    ).catch((e: Error) => {
      throw new Error(`${e.message}; relay stderr: ${relayErr.slice(-2000) || '(empty)'}`);
    });

    const tokenFile = path.join(dir, 'm1.token');
    fs.writeFileSync(tokenFile, machineToken, { mode: 0o600 });
    kp = await startKernelProcess({
      extra: ['--log-level', 'error', '--relay', base, '--machine-id', 'm1', '--relay-token-file', tokenFile],
    });
    client = await kp.client();
    const script = path.join(dir, 'agent.py');
    fs.writeFileSync(script, AGENT, { mode: 0o644 });
    for (const name of ['north', 'south']) await client.spawn({ name, script, restart_policy: 'always' });
    await until(
      async () => (await client.list()).filter((a) => a.state === 'RUNNING').length === 2,
      30_000,
      'the agents running',
    );
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await kp?.stop();
    if (relay && relay.exitCode === null && relay.signalCode === null) {
      const exited = new Promise((r) => relay.once('exit', r));
      relay.kill('SIGTERM');
      await exited;
    }
  });

  const cell = (page: Page, name: string, id: string): Promise<string> =>
    page
      .locator(`[data-testid="agent-row"][data-agent-name="${name}"]`)
      .getByTestId(id)
      .textContent({ timeout: 1000 })
      .then((t) => (t ?? '').trim())
      .catch(() => '');

  it('lists the machine, shows its agents live through the tunnel, and restarts one there', async () => {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/#token=${userToken}`);

    const m1 = page.locator('[data-testid="machine-row"][data-machine="m1"]');
    await expect.poll(() => m1.textContent({ timeout: 1000 }).catch(() => ''), WAIT).toContain('connected');
    await expect
      .poll(
        () =>
          page
            .getByTestId('current-machine')
            .textContent({ timeout: 1000 })
            .catch(() => ''),
        WAIT,
      )
      .toContain('m1');
    for (const name of ['north', 'south'])
      await expect.poll(() => cell(page, name, 'agent-state'), WAIT).toBe('RUNNING');
    // The stream through the relay: live, and the grid follows it.
    await expect.poll(() => page.getByTestId('conn-status').getAttribute('data-state'), WAIT).toBe('open');

    const before = (await client.list()).find((a) => a.name === 'south')!.pid;
    await page
      .locator('[data-testid="agent-row"][data-agent-name="south"]')
      .getByTestId('action-restart')
      .click();
    const after = await until(
      async () => {
        const a = (await client.list()).find((x) => x.name === 'south');
        return a && a.state === 'RUNNING' && a.pid !== before ? a.pid : 0;
      },
      30_000,
      'south restarted',
    );
    await expect.poll(() => cell(page, 'south', 'agent-pid'), WAIT).toBe(String(after));
    await expect
      .poll(
        () =>
          page
            .locator('[data-testid="event-row"][data-event-type="AGENT_SPAWNED"]', { hasText: 'south' })
            .count(),
        WAIT,
      )
      .toBeGreaterThan(0);
    // The kernel's metrics messages reach the charts through the relay; the chosen machine's count is live.
    await expect
      .poll(async () => Number(await page.getByTestId('charts').getAttribute('data-samples')), WAIT)
      .toBeGreaterThanOrEqual(5);
    expect((await m1.getByTestId('machine-agents').textContent())?.trim()).toBe('2');
    await page.screenshot({ path: path.join(REPO_ROOT, 'reports', 'dashboard-fleet.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('a machine token is refused at the prompt (it may not call the API)', async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/#token=${machineToken}`);
    await page.getByTestId('auth-prompt').waitFor({ state: 'visible', timeout: WAIT.timeout });
    await expect.poll(() => page.getByTestId('auth-error').textContent(), WAIT).toMatch(/may not use/);
    await page.close();
  }, 90_000);
});
