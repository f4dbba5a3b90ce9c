/**
 * kernel/http/static.ts against real files: the dashboard's index and hashed assets with their content
 * types and cache headers, a 503 page while the dashboard is not built, no way out of the directory,
 * and the routes of the app it is mounted on left alone. The last case serves the real build.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Hono } from 'hono';
import { afterAll, describe, expect, it } from 'vitest';
import { DASHBOARD_DIR, mountDashboard } from './static.js';

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'clv-static-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function appOn(root: string): Hono {
  const app = new Hono();
  app.get('/api/v1/ping', (c) => c.json({ pong: true }));
  mountDashboard(app, { root });
  return app;
}

const get = (app: Hono, p: string) => app.fetch(new Request(`http://localhost${p}`));

describe('mountDashboard', () => {
  const root = tmp();
  fs.mkdirSync(path.join(root, 'assets'));
  fs.writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>x</title>');
  fs.writeFileSync(path.join(root, 'assets', 'index-Ab12Cd34.js'), 'console.log(1)');
  fs.writeFileSync(path.join(root, 'assets', 'index-Ab12Cd34.css'), 'body{}');
  fs.writeFileSync(path.join(path.dirname(root), `${path.basename(root)}-secret.txt`), 'secret');
  const app = appOn(root);

  it('/ and /index.html are the page: html, never cached, with a CSP that allows only its own origin', async () => {
    for (const p of ['/', '/index.html']) {
      const res = await get(app, p);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(res.headers.get('cache-control')).toBe('no-cache');
      expect(res.headers.get('content-security-policy')).toContain("connect-src 'self'");
      expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(await res.text()).toContain('<title>x</title>');
    }
  });

  it('hashed assets: their content type, cached for a year', async () => {
    const js = await get(app, '/assets/index-Ab12Cd34.js');
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(js.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(await js.text()).toBe('console.log(1)');
    const css = await get(app, '/assets/index-Ab12Cd34.css');
    expect(css.headers.get('content-type')).toMatch(/^text\/css/);
  });

  it('a missing asset is a 404, and nothing outside the directory is served', async () => {
    expect((await get(app, '/assets/nope.js')).status).toBe(404);
    for (const p of [
      `/assets/../../${path.basename(root)}-secret.txt`,
      `/assets/%2e%2e/%2e%2e/${path.basename(root)}-secret.txt`,
      '/assets/..%2f..%2fetc%2fpasswd',
    ]) {
      const res = await get(app, p);
      expect(res.status, p).not.toBe(200);
      expect(await res.text()).not.toContain('secret');
    }
  });

  it("leaves the app's own routes alone", async () => {
    expect(await (await get(app, '/api/v1/ping')).json()).toEqual({ pong: true });
  });

  it('a dashboard that was not built: 503 with a page saying how to build it, until it is', async () => {
    const empty = tmp();
    const app2 = appOn(empty);
    for (const p of ['/', '/assets/index-x.js']) {
      const res = await get(app2, p);
      expect(res.status).toBe(503);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(await res.text()).toContain('npm run build');
    }
    fs.writeFileSync(path.join(empty, 'index.html'), '<!doctype html><title>late</title>');
    const res = await get(app2, '/');
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('late');
  });

  it.runIf(fs.existsSync(path.join(DASHBOARD_DIR, 'index.html')))(
    'the real build (npm run build): every asset index.html names is served with its type',
    async () => {
      const real = new Hono();
      mountDashboard(real);
      const html = await (await get(real, '/')).text();
      const refs = [...html.matchAll(/(?:src|href)="\.\/(assets\/[^"]+)"/g)].map((m) => m[1]);
      expect(refs.some((r) => r.endsWith('.js'))).toBe(true);
      expect(refs.some((r) => r.endsWith('.css'))).toBe(true);
      // No CDN: nothing is loaded from another origin.
      expect(html).not.toMatch(/(?:src|href)="(?:https?:)?\/\//);
      for (const r of refs) {
        const res = await get(real, `/${r}`);
        expect(res.status, r).toBe(200);
        expect(res.headers.get('content-type'), r).toMatch(r.endsWith('.js') ? /javascript/ : /text\/css/);
      }
    },
  );
});
