/**
 * The dashboard in a real browser (playwright-core driving Debian's chromium, headless) against a real
 * kernel process started with `--http`, with real restartable agents: the page opens with the token
 * from the URL fragment, shows the agents, sees one SIGKILLed from outside die and come back, restarts
 * another when its button is clicked, lists the events, follows a log, and asks for a token when the
 * one it was given is wrong. Needs `npm run build` (dist/ and dist/dashboard/). Every wait is for a
 * condition the page shows, with generous timeouts; no sleeps. The screenshot goes to reports/.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
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
const SCREENSHOT = path.join(REPO_ROOT, 'reports', 'dashboard.png');
const WAIT = { timeout: 45_000, interval: 100 };
const NAMES = ['alpha', 'bravo', 'charlie'];

const AGENT = [
  'import sys',
  'from clove_sdk import CloveClient',
  'c = CloveClient()',
  'name = sys.argv[1]',
  'print(f"{name} ready", flush=True)',
  'while True:',
  '    m = c.wait_message(timeout=30)',
  '    if m: print(name, "got", m["message"], flush=True)',
].join('\n');

const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium)
  console.warn(`dashboard.test.ts: ${CHROMIUM} not found (ci/setup.sh installs it): skipped`);

describe.runIf(haveChromium)('the dashboard in a browser', () => {
  let kp: KernelProcess;
  let client: CloveClient;
  let browser: Browser;
  let base: string;
  let token: string;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    kp = await startKernelProcess({ extra: ['--log-level', 'error', '--http', `127.0.0.1:${port}`] });
    const tokenFile = path.join(kp.dataDir, 'http-token');
    token = await until(
      () => fs.existsSync(tokenFile) && fs.readFileSync(tokenFile, 'utf8').trim(),
      15_000,
      'the http token',
    );
    await until(async () => (await fetch(`${base}/readyz`).catch(() => null))?.ok, 15_000, 'readyz');
    client = await kp.client();
    const script = path.join(tempDir(), 'agent.py');
    fs.writeFileSync(script, AGENT, { mode: 0o644 });
    for (const name of NAMES)
      await client.spawn({
        name,
        script,
        args: [name],
        restart_policy: 'always',
        // charlie has a quota: the grid shows how much of it is used
        ...(name === 'charlie' ? { quotas: { memory: { limit: 256 * 1024 * 1024 } } } : {}),
      });
    // One replica of a clove.yaml-style service (the labels `clove up` gives), for the scale buttons.
    await client.spawn({
      name: 'web-1',
      script,
      args: ['web'],
      restart_policy: 'always',
      labels: { 'clove.project': 'demo', 'clove.service': 'web', 'clove.replica': '1' },
    });
    await until(
      async () => (await client.list()).filter((a) => a.state === 'RUNNING').length === NAMES.length + 1,
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
  });

  const row = (page: Page, name: string): Locator =>
    page.locator(`[data-testid="agent-row"][data-agent-name="${name}"]`);
  const cell = (page: Page, name: string, id: string): Promise<string> =>
    row(page, name)
      .getByTestId(id)
      .textContent({ timeout: 1000 })
      .then((t) => (t ?? '').trim())
      .catch(() => '');
  const pidOf = async (name: string) => (await client.list()).find((a) => a.name === name)!.pid;

  it('shows the agents live; a SIGKILLed agent dies and comes back; Restart restarts another', async () => {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1100 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/#token=${token}`);

    // The grid shows every agent running, fed by the stream; the token left the address bar.
    for (const name of NAMES) await expect.poll(() => cell(page, name, 'agent-state'), WAIT).toBe('RUNNING');
    await expect.poll(() => page.getByTestId('conn-status').getAttribute('data-state'), WAIT).toBe('open');
    expect(page.url()).not.toContain('token');
    expect(await page.evaluate(() => sessionStorage.getItem('clove.token'))).toBe(token);

    // alpha is SIGKILLed from outside: the page sees it exit, then run again with one more restart.
    const alphaPid = await pidOf('alpha');
    expect(await cell(page, 'alpha', 'agent-pid')).toBe(String(alphaPid));
    process.kill(alphaPid, 'SIGKILL');
    await expect
      .poll(
        () =>
          page
            .locator('[data-testid="event-row"][data-event-type="AGENT_EXITED"]', { hasText: 'alpha' })
            .count(),
        WAIT,
      )
      .toBeGreaterThan(0);
    await expect.poll(() => cell(page, 'alpha', 'agent-restarts'), WAIT).toBe('1');
    await expect.poll(() => cell(page, 'alpha', 'agent-state'), WAIT).toBe('RUNNING');
    const alphaNew = await pidOf('alpha');
    expect(alphaNew).not.toBe(alphaPid);
    await expect.poll(() => cell(page, 'alpha', 'agent-pid'), WAIT).toBe(String(alphaNew));

    // Restart bravo with its button: a new pid, in the page and in the kernel.
    const bravoPid = await pidOf('bravo');
    await row(page, 'bravo').getByTestId('action-restart').click();
    await expect
      .poll(async () => {
        const p = await cell(page, 'bravo', 'agent-pid');
        return p !== '' && p !== '—' && p !== String(bravoPid);
      }, WAIT)
      .toBe(true);
    await expect.poll(() => cell(page, 'bravo', 'agent-state'), WAIT).toBe('RUNNING');
    const bravoNew = await pidOf('bravo');
    expect(bravoNew).not.toBe(bravoPid);
    await expect.poll(() => cell(page, 'bravo', 'agent-pid'), WAIT).toBe(String(bravoNew));
    await expect
      .poll(
        () =>
          page
            .locator('[data-testid="event-row"][data-event-type="AGENT_SPAWNED"]', { hasText: 'bravo' })
            .count(),
        WAIT,
      )
      .toBeGreaterThan(0);
    // Charlie was left alone.
    expect(await cell(page, 'charlie', 'agent-restarts')).toBe('0');

    // Messages to charlie: its messages-in count goes up, and its log tail (REST logs, refreshed) shows them.
    await row(page, 'charlie').getByTestId('agent-name').click();
    await expect
      .poll(
        () =>
          page
            .getByTestId('log-tail')
            .textContent({ timeout: 1000 })
            .catch(() => ''),
        WAIT,
      )
      .toContain('charlie ready');
    for (let i = 1; i <= 3; i++) await client.send('charlie', { n: i });
    await expect.poll(() => cell(page, 'charlie', 'agent-msgs-in'), WAIT).toBe('3');
    await expect
      .poll(
        () =>
          page
            .getByTestId('log-tail')
            .textContent({ timeout: 1000 })
            .catch(() => ''),
        WAIT,
      )
      .toContain("charlie got {'n': 3}");
    expect(await cell(page, 'charlie', 'agent-quota')).toMatch(/^\d+% memory$/);

    // The charts draw the stream's metrics messages (a sample a second); ten for the screenshot.
    await expect.poll(() => page.locator('clove-chart canvas').count(), WAIT).toBe(4);
    await expect
      .poll(async () => Number(await page.getByTestId('charts').getAttribute('data-samples')), WAIT)
      .toBeGreaterThanOrEqual(10);
    await page.getByTestId('notice').waitFor({ state: 'detached', timeout: WAIT.timeout });

    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('pause and resume, kill (asked twice), and scale a service up and down by one', async () => {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1100 } });
    await page.goto(`${base}/#token=${token}`);
    await expect.poll(() => cell(page, 'charlie', 'agent-state'), WAIT).toBe('RUNNING');

    // The filter narrows the grid (here by a label value), and clearing it brings every row back.
    await page.getByTestId('agent-filter').fill('demo');
    await expect.poll(() => page.getByTestId('agent-row').count(), WAIT).toBe(1);
    expect(await row(page, 'web-1').count()).toBe(1);
    await page.getByTestId('agent-filter').fill('');
    await expect.poll(() => page.getByTestId('agent-row').count(), WAIT).toBe(4);

    await row(page, 'charlie').getByTestId('action-pause').click();
    await expect.poll(() => cell(page, 'charlie', 'agent-state'), WAIT).toBe('PAUSED');
    expect((await client.list()).find((a) => a.name === 'charlie')!.state).toBe('PAUSED');
    await row(page, 'charlie').getByTestId('action-resume').click();
    await expect.poll(() => cell(page, 'charlie', 'agent-state'), WAIT).toBe('RUNNING');

    // web-1 is one replica of demo/web: +1 starts web-2 (seen in the page and in the kernel), −1 stops it.
    const svc = page.locator('[data-testid="service-row"][data-service="demo/web"]');
    const replicas = () =>
      svc
        .getByTestId('service-replicas')
        .textContent({ timeout: 1000 })
        .catch(() => '');
    await expect.poll(replicas, WAIT).toBe('1');
    await svc.getByTestId('scale-up').click();
    await expect.poll(() => cell(page, 'web-2', 'agent-state'), WAIT).toBe('RUNNING');
    await expect.poll(replicas, WAIT).toBe('2');
    const web2 = (await client.list()).find((a) => a.name === 'web-2');
    expect(web2?.labels).toMatchObject({
      'clove.project': 'demo',
      'clove.service': 'web',
      'clove.replica': '2',
    });
    await svc.getByTestId('scale-down').click();
    await expect.poll(() => row(page, 'web-2').count(), WAIT).toBe(0);
    await expect.poll(replicas, WAIT).toBe('1');
    expect((await client.list()).some((a) => a.name === 'web-2')).toBe(false);
    expect(await svc.getByTestId('scale-down').isDisabled()).toBe(true);

    // Kill asks to be clicked twice; then the agent is gone from the kernel and the grid.
    const kill = row(page, 'web-1').getByTestId('action-kill');
    await kill.click();
    await expect.poll(() => kill.textContent(), WAIT).toContain('Confirm');
    expect((await client.list()).some((a) => a.name === 'web-1')).toBe(true);
    await kill.click();
    await expect.poll(() => row(page, 'web-1').count(), WAIT).toBe(0);
    expect((await client.list()).some((a) => a.name === 'web-1')).toBe(false);
    await page.close();
  });

  it('a wrong token shows the auth prompt; the right one typed there opens the grid', async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/#token=not-the-token`);
    await page.getByTestId('auth-prompt').waitFor({ state: 'visible', timeout: WAIT.timeout });
    await expect.poll(() => page.getByTestId('auth-error').textContent(), WAIT).toMatch(/refused/);
    expect(await page.evaluate(() => sessionStorage.getItem('clove.token'))).toBeNull();
    await page.getByTestId('token-input').fill(token);
    await page.getByTestId('token-submit').click();
    await expect.poll(() => cell(page, 'charlie', 'agent-state'), WAIT).toBe('RUNNING');
    await page.close();
  });
  it('shows the stream dropping when the kernel stops, and is live again when it is back', async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/#token=${token}`);
    const state = () => page.getByTestId('conn-status').getAttribute('data-state');
    await expect.poll(state, WAIT).toBe('open');
    await expect.poll(() => cell(page, 'charlie', 'agent-state'), WAIT).toBe('RUNNING');

    const { socketPath, dataDir } = kp;
    await kp.stop();
    await expect.poll(state, WAIT).toBe('reconnecting');
    // The same data dir (same token; the agents with a restart policy start again) and the same port.
    kp = await startKernelProcess({
      socketPath,
      dataDir,
      extra: ['--log-level', 'error', '--http', `127.0.0.1:${port}`],
    });
    client = await kp.client();
    await expect.poll(state, { ...WAIT, timeout: 60_000 }).toBe('open');
    const charlie = await until(
      async () => (await client.list()).find((a) => a.name === 'charlie' && a.state === 'RUNNING'),
      30_000,
      'charlie running again',
    );
    await expect.poll(() => cell(page, 'charlie', 'agent-pid'), WAIT).toBe(String(charlie.pid));
    await expect.poll(() => cell(page, 'charlie', 'agent-state'), WAIT).toBe('RUNNING');
    await page.close();
  });
});
