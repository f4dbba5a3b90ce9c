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
  build: {
    outDir: path.resolve(here, '../../../dist/dashboard'),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    chunkSizeWarningLimit: 400,
  },
});
