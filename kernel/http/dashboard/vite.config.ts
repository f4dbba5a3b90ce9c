/**
 * Vite build of the dashboard: `npm run build` runs it after tsc. The output goes to dist/dashboard/,
 * which kernel/http/static.ts serves. Relative asset URLs (base './') so that a proxy may mount the
 * dashboard under any prefix; everything is bundled (no CDN, no web fonts) and nothing is fetched.
 */
import path from 'node:path';
import { defineConfig } from 'vite';

const here = import.meta.dirname;

export default defineConfig({
  root: here,
  base: './',
  logLevel: 'warn',
  publicDir: false,
  // `npx vite --config kernel/http/dashboard/vite.config.ts`: the page with hot reload, its API calls
  // passed to a running kernel (`clove kernel --http 127.0.0.1:7070`, or CLOVE_HTTP=http://host:port).
  server: {
    proxy: {
      '/api': { target: process.env.CLOVE_HTTP ?? 'http://127.0.0.1:7070', ws: true, changeOrigin: true },
    },
  },
  build: {
    outDir: path.resolve(here, '../../../dist/dashboard'),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    chunkSizeWarningLimit: 400,
  },
});
