/**
 * Serves the built dashboard (dist/dashboard/, written by `vite build` during `npm run build`) from a
 * Hono app: the kernel's HTTP API mounts it, and so does the relay. Files need no token (the page asks
 * for one and sends it to the API); `/` is index.html. Hashed assets are cached for a year, index.html
 * never (a new build must be picked up). A kernel run from sources whose dashboard was never built
 * answers 503 with a page saying how to build it, rather than a bare 404.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Context, Env, Hono, MiddlewareHandler } from 'hono';
import { serveStatic } from '@hono/node-server/serve-static';
import { REPO_ROOT } from '../config.js';

/** Where `npm run build` puts the dashboard. */
export const DASHBOARD_DIR = path.join(REPO_ROOT, 'dist', 'dashboard');

/**
 * The page may talk to its own origin only (REST and the stream), loads nothing from elsewhere and may
 * not be framed. Inline styles are allowed because uPlot and the quota bars set element styles.
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export interface DashboardOptions {
  /** The directory with index.html and assets/ (default: dist/dashboard of this package). */
  root?: string;
}

function securityHeaders(h: Headers): void {
  h.set('X-Content-Type-Options', 'nosniff');
  h.set('Referrer-Policy', 'no-referrer');
  h.set('X-Frame-Options', 'DENY');
}

/** The answer when dist/dashboard/index.html does not exist. */
function notBuilt(c: Context, root: string): Response {
  const res = c.html(
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Clove dashboard not built</title></head>` +
      `<body style="font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;line-height:1.5">` +
      `<h1>The dashboard was not built</h1>` +
      `<p>This kernel has no dashboard files in <code>${escapeHtml(root)}</code>. ` +
      `Run <code>npm run build</code> in the Clove checkout (it runs <code>vite build</code>), then reload.</p>` +
      `<p>The REST API under <code>/api/v1/</code> works without it.</p></body></html>`,
    503,
  );
  securityHeaders(res.headers);
  res.headers.set('Cache-Control', 'no-store');
  res.headers.set('Retry-After', '60');
  return res;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** Mounts GET `/`, `/index.html` and `/assets/*` on `app`. Call it before or after the API routes. */
export function mountDashboard<E extends Env>(app: Hono<E>, opts: DashboardOptions = {}): void {
  const root = path.resolve(opts.root ?? DASHBOARD_DIR);
  const index = path.join(root, 'index.html');

  // Built on first use: serveStatic complains on stderr when its root does not exist (yet).
  let handlers: { page: MiddlewareHandler<E>; assets: MiddlewareHandler<E> } | null = null;
  const serve = () =>
    (handlers ??= {
      page: serveStatic<E>({ root, path: 'index.html' }),
      assets: serveStatic<E>({ root }),
    });

  // Checked per request, so a build made while the kernel runs is served without a restart.
  const built = (): boolean => fs.existsSync(index);

  for (const route of ['/', '/index.html']) {
    app.get(route, async (c, next) => {
      if (!built()) return notBuilt(c, root);
      const res = await serve().page(c, next);
      if (!res) return c.text('dashboard index.html is missing', 404);
      securityHeaders(res.headers);
      res.headers.set('Cache-Control', 'no-cache');
      res.headers.set('Content-Security-Policy', DASHBOARD_CSP);
      return res;
    });
  }
  app.get('/assets/*', async (c, next) => {
    if (!built()) return notBuilt(c, root);
    const res = await serve().assets(c, next);
    if (!res) return c.text(`no such dashboard asset: ${c.req.path}`, 404);
    securityHeaders(res.headers);
    // vite names every asset by its content hash: a changed file has a new name.
    if (res.ok) res.headers.set('Cache-Control', 'public, max-age=31536000, immutable');
    return res;
  });
}
