import fs from 'node:fs';
import path from 'node:path';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

const ROOT = import.meta.dirname;

// ── Import boundaries ───────────────────────────────────────────────────────────────────
// Enforced with import-x/no-restricted-paths. The rule resolves every import to a file
// (NodeNext `./x.js` → `./x.ts` through the TypeScript resolver) and compares paths, so a
// relative, `export … from` or dynamic import() is caught alike. An import that does not
// resolve would slip through it, which is why import-x/no-unresolved is an error too.
// ci/lint-boundaries.test.ts proves each zone below reports.

const TEST_INFRA = ['harness', 'bench', 'chaos', 'scenarios'];
// Test code: vitest files, and the sandbox's shared test helpers.
const TEST_FILES = ['**/*.test.ts', 'kernel/sandbox/testutil.ts'];
// The only non-test files that may import the kernel object.
const KERNEL_OBJECT_USERS = ['kernel/kernel.ts', 'kernel/main.ts', 'harness/**'];
const FAMILIES = fs
  .readdirSync(path.join(ROOT, 'kernel/syscalls'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name);

const MSG = {
  clients:
    'clients (sdk/, cli/) never import the kernel: talk to it over the protocol (protocol/ is allowed).',
  clientTests:
    'client tests (sdk/, cli/ *.test.ts) may use harness/ to start a kernel, never bench/, chaos/ or scenarios/.',
  contract:
    'the contract (protocol/) imports nothing of the project but itself: kernel/, sdk/, cli/ and the test infrastructure depend on it, not the reverse.',
  contractTests:
    'contract tests (protocol/*.test.ts) may check the contract against sdk/ and use harness/, never import kernel/, cli/, bench/, chaos/ or scenarios/.',
  families:
    'syscall families import from kernel/ only kernel/core/family.ts (plus their own folder): never the kernel object or kernel internals.',
  familyIsolation:
    'a syscall family never imports another family (or kernel/syscalls/ itself): share code through kernel/core/family.ts.',
  testInfra:
    'production code (protocol/, kernel/, sdk/, cli/) never imports test infrastructure (harness/, bench/, chaos/, scenarios/); only *.test.ts files and kernel/sandbox/testutil.ts may.',
  dashboard:
    'the dashboard (kernel/http/dashboard/) is browser code: it imports only its own folder and packages, and reaches the kernel over HTTP.',
  kernelObject:
    'only kernel/main.ts, harness/ and test files import kernel/kernel.ts: everything else goes through the protocol (or, for families, kernel/core/family.ts).',
};

/** Zones that hold for every file, test or not. */
const COMMON_ZONES = [
  // Rule 1: clients never import the kernel.
  { target: ['sdk', 'cli'], from: ['kernel'], message: MSG.clients },
  // Rule 3: families see the kernel only through kernel/core/family.ts …
  {
    target: ['kernel/syscalls'],
    from: ['kernel'],
    except: ['./core/family.ts', './syscalls'],
    message: MSG.families,
  },
  // … and never each other.
  ...FAMILIES.map((family) => ({
    target: [`kernel/syscalls/${family}`],
    from: ['kernel/syscalls'],
    except: [`./${family}`],
    message: MSG.familyIsolation,
  })),
];

/** Zones for production code (everything that is not a test file). */
const PRODUCTION_ZONES = [
  ...COMMON_ZONES,
  // Rule 2: the contract imports nothing of the project but itself.
  {
    target: ['protocol'],
    from: ['kernel', 'sdk', 'cli', ...TEST_INFRA],
    message: MSG.contract,
  },
  // Rule 4 (and the test-infrastructure half of rule 1): production code never imports test
  // infrastructure. protocol/ is covered by rule 2's zone above.
  { target: ['kernel', 'sdk', 'cli'], from: TEST_INFRA, message: MSG.testInfra },
  // Rule 6: the dashboard is bundled for the browser by vite (its own tsconfig, DOM lib).
  {
    target: ['kernel/http/dashboard'],
    from: ['.'],
    except: ['./kernel/http/dashboard', './node_modules'],
    message: MSG.dashboard,
  },
];

/** Rule 5: nothing but kernel/kernel.ts, kernel/main.ts, harness/ and tests import kernel/kernel.ts. */
const KERNEL_OBJECT_ZONE = { target: ['.'], from: ['kernel/kernel.ts'], message: MSG.kernelObject };

/** Zones for test files: they may start kernels through harness/ (and import kernel/kernel.ts). */
const TEST_ZONES = [
  ...COMMON_ZONES,
  { target: ['sdk', 'cli'], from: ['bench', 'chaos', 'scenarios'], message: MSG.clientTests },
  {
    target: ['protocol'],
    from: ['kernel', 'cli', 'bench', 'chaos', 'scenarios'],
    message: MSG.contractTests,
  },
];

const restricted = (zones) => ['error', { basePath: ROOT, zones }];

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'reports/**',
      'native/build/**',
      'bench/rivals/.venv/**',
      'bench/rivals/node/**',
      '**/.venv/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },

  // Import boundaries. ESLint does not merge a rule's options across config objects (the last
  // matching object wins), so each object below carries a full zone list: production zones plus
  // rule 5 for every file, then without rule 5 for the kernel object's users, then test zones.
  {
    files: ['**/*.ts', '**/*.mjs', '**/*.js'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/extensions': ['.ts', '.mjs', '.js'],
      'import-x/resolver-next': [
        createTypeScriptImportResolver({ project: path.join(ROOT, 'tsconfig.json') }),
      ],
    },
    rules: {
      // Without this an import the resolver cannot find would pass every zone unnoticed.
      // bin/clove.js loads the build output, which exists only after `npm run build`. The MCP SDK's
      // subpaths (`@modelcontextprotocol/sdk/client/stdio.js`) come from a wildcard export whose `types`
      // pattern the resolver reads as `stdio.js.d.ts`; TypeScript finds them through typesVersions.
      'import-x/no-unresolved': ['error', { ignore: ['^\\.\\./dist/', '^@modelcontextprotocol/sdk/'] }],
      'import-x/no-restricted-paths': restricted([...PRODUCTION_ZONES, KERNEL_OBJECT_ZONE]),
    },
  },
  {
    files: KERNEL_OBJECT_USERS,
    ignores: TEST_FILES,
    rules: { 'import-x/no-restricted-paths': restricted(PRODUCTION_ZONES) },
  },
  {
    files: TEST_FILES,
    rules: { 'import-x/no-restricted-paths': restricted(TEST_ZONES) },
  },
);
