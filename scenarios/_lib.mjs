// Shared by the scenario scripts: loads the compiled harness (building it if needed) and prints verdicts.
import { $, chalk, fs, path } from 'zx';
import { pathToFileURL } from 'node:url';

export const ROOT = path.resolve(import.meta.dirname, '..');

/** Imports a module of the build (dist/), building first if it is missing. */
export async function load(mod) {
  const file = path.join(ROOT, 'dist', mod);
  if (!fs.existsSync(file)) await $({ cwd: ROOT })`npm run --silent build`;
  return import(pathToFileURL(file).href);
}

/** Prints every check and the verdict; returns the exit code (0 only if every check passed). */
export function verdict(name, checks) {
  console.log('');
  for (const [label, ok, detail] of checks) {
    console.log(
      `${ok ? chalk.green('✔') : chalk.red('✖')} ${label}${detail !== undefined ? chalk.gray(`  (${detail})`) : ''}`,
    );
  }
  const pass = checks.every(([, ok]) => ok);
  console.log(`\nVERDICT ${name}: ${pass ? chalk.green('PASS') : chalk.red('FAIL')}`);
  return pass ? 0 : 1;
}

/** Runs `fn`, turning an exception into a failed verdict; exits with the verdict's code. */
export async function scenario(name, fn) {
  let code;
  try {
    code = await fn();
  } catch (e) {
    console.error(e);
    code = verdict(name, [['scenario ran to the end', false, e.message]]);
  }
  const { closeAllSwarms } = await load('harness/swarm.js');
  await closeAllSwarms();
  process.exit(code);
}

export const fmt = (s) => `p50 ${s.p50} ms, p95 ${s.p95} ms, max ${s.max} ms`;
