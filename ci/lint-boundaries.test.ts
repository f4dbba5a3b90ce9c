// Proves the import boundaries in eslint.config.js bite: each zone reports an
// import-x/no-restricted-paths error on a violating import, and stays silent on an allowed one.
//
// Fixtures are virtual: lintText() is given source text and a filePath inside a zone that does not
// exist on disk. Nothing is written. The resolver resolves relative imports against the virtual
// file's directory, and the modules they import (kernel/kernel.ts, protocol/index.ts, …) are real,
// so the rule sees exactly what it would see for a committed file at that path. That resolution
// really happens is checked here too: a zone can only report an import that resolved, the allowed
// cases must come back with no message at all (an unresolved import is an import-x/no-unresolved
// error), and an import of a missing module must report import-x/no-unresolved.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint, type Linter } from 'eslint';
import { beforeAll, describe, expect, it } from 'vitest';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// A distinctive part of each zone's message in eslint.config.js.
const RULE = {
  clients: 'clients (sdk/, cli/) never import the kernel',
  contract: 'the contract (protocol/) imports nothing of the project but itself',
  families: 'syscall families import from kernel/ only kernel/core/family.ts',
  familyIsolation: 'a syscall family never imports another family',
  testInfra: 'production code (protocol/, kernel/, sdk/, cli/) never imports test infrastructure',
  kernelObject: 'only kernel/main.ts, harness/ and test files import kernel/kernel.ts',
  clientTests: 'client tests (sdk/, cli/ *.test.ts) may use harness/',
  dashboard: 'the dashboard (kernel/http/dashboard/) is browser code',
} as const;

let eslint: ESLint;
beforeAll(() => {
  eslint = new ESLint({ cwd: repoRoot });
});

/** Lints `code` as if it were the file `file` (relative to the repo root); returns its messages. */
async function lint(file: string, code: string): Promise<Linter.LintMessage[]> {
  const [result] = await eslint.lintText(code, { filePath: path.join(repoRoot, file) });
  return result.messages;
}

function boundaryErrors(messages: Linter.LintMessage[]): string[] {
  return messages
    .filter((m) => m.ruleId === 'import-x/no-restricted-paths' && m.severity === 2)
    .map((m) => m.message);
}

async function expectViolation(file: string, code: string, rule: keyof typeof RULE): Promise<void> {
  const messages = await lint(file, code);
  const errors = boundaryErrors(messages);
  expect(
    errors.some((m) => m.includes(RULE[rule])),
    `${file}: ${JSON.stringify(messages, null, 2)}`,
  ).toBe(true);
}

async function expectClean(file: string, code: string): Promise<void> {
  const messages = await lint(file, code);
  expect(messages, file).toEqual([]);
}

describe('the resolver resolves', () => {
  it('an import of a missing module is an import-x/no-unresolved error, not a silent pass', async () => {
    const messages = await lint('sdk/typescript/missing.ts', "export { x } from './no-such-module.js';\n");
    expect(messages.map((m) => m.ruleId)).toContain('import-x/no-unresolved');
  });

  it('NodeNext ./x.js specifiers resolve to ./x.ts (no message for a real module)', async () => {
    await expectClean('sdk/typescript/ok.ts', "export { CloveClient } from './client.js';\n");
  });
});

describe('rule 1: clients never import the kernel', () => {
  it('sdk/ importing kernel/kernel.ts is reported', async () => {
    await expectViolation(
      'sdk/typescript/bad.ts',
      "import { Kernel } from '../../kernel/kernel.js';\nexport { Kernel };\n",
      'clients',
    );
  });

  it('cli/ importing a kernel internal (also via dynamic import) is reported', async () => {
    await expectViolation(
      'cli/bad.ts',
      "export const load = () => import('../kernel/core/errors.js');\n",
      'clients',
    );
  });

  it('a client test importing the kernel is reported too', async () => {
    await expectViolation(
      'sdk/typescript/bad.test.ts',
      "export { Kernel } from '../../kernel/kernel.js';\n",
      'clients',
    );
  });

  it('a client test importing bench/ is reported, harness/ is allowed', async () => {
    await expectViolation(
      'cli/bad.test.ts',
      "export { tempDir } from '../bench/lib/child.js';\n",
      'clientTests',
    );
    await expectClean('cli/ok.test.ts', "export { startKernel } from '../harness/kernel.js';\n");
  });

  it('sdk/ importing protocol/ is allowed', async () => {
    await expectClean('sdk/typescript/ok.ts', "export { Op } from '../../protocol/index.js';\n");
    await expectClean('cli/ok.ts', "export { DEFAULT_SOCKET } from '../protocol/index.js';\n");
  });
});

describe('rule 2: the contract imports nothing of the project but itself', () => {
  for (const [what, spec] of [
    ['kernel/', '../kernel/core/errors.js'],
    ['sdk/', '../sdk/typescript/client.js'],
    ['cli/', '../cli/main.js'],
    ['harness/', '../harness/kernel.js'],
  ] as const) {
    it(`protocol/ importing ${what} is reported`, async () => {
      await expectViolation('protocol/bad.ts', `export * from '${spec}';\n`, 'contract');
    });
  }

  it('an .mjs file in protocol/ is covered too', async () => {
    await expectViolation('protocol/bad.mjs', "export * from '../sdk/typescript/errors.js';\n", 'contract');
  });

  it('protocol/ importing itself is allowed', async () => {
    await expectClean('protocol/ok.ts', "export { encodeFrame } from './frame.js';\n");
  });
});

describe('rule 3: families see the kernel only through kernel/core/family.ts', () => {
  it('a family importing the kernel object is reported', async () => {
    await expectViolation(
      'kernel/syscalls/ipc/bad.ts',
      "export { Kernel } from '../../kernel.js';\n",
      'families',
    );
  });

  it('a family importing a kernel internal (even as a type) is reported', async () => {
    await expectViolation(
      'kernel/syscalls/state/bad.ts',
      "export type { StateStore } from '../../state/store.js';\n",
      'families',
    );
    await expectViolation(
      'kernel/syscalls/brand-new/index.ts',
      "export { Dispatcher } from '../../core/dispatch.js';\n",
      'families',
    );
  });

  it('a family importing another family is reported', async () => {
    await expectViolation(
      'kernel/syscalls/ipc/bad.ts',
      "export { default } from '../lifecycle/index.js';\n",
      'familyIsolation',
    );
  });

  it('family.ts, its own folder and protocol/ are allowed', async () => {
    await expectClean(
      'kernel/syscalls/ipc/ok.ts',
      [
        "export { defineFamily } from '../../core/family.js';",
        "export { default } from './index.js';",
        "export { Op } from '../../../protocol/index.js';",
        '',
      ].join('\n'),
    );
  });
});

describe('rule 4: production code never imports test infrastructure', () => {
  for (const [file, spec] of [
    ['kernel/agents/bad.ts', '../../harness/kernel.js'],
    ['kernel/bad.ts', '../chaos/run.js'],
    ['sdk/typescript/bad.ts', '../../bench/lib/child.js'],
    ['cli/bad.ts', '../harness/kernel.js'],
  ] as const) {
    it(`${file} importing ${spec} is reported`, async () => {
      await expectViolation(file, `export * from '${spec}';\n`, 'testInfra');
    });
  }

  it('test files and kernel/sandbox/testutil.ts may import the harness', async () => {
    await expectClean('kernel/agents/ok.test.ts', "export { startKernel } from '../../harness/kernel.js';\n");
    await expectClean(
      'kernel/sandbox/testutil.ts',
      "export { startKernel } from '../../harness/kernel.js';\n",
    );
  });
});

describe('rule 5: only kernel/main.ts, harness/ and tests import kernel/kernel.ts', () => {
  for (const file of ['kernel/agents/bad.ts', 'kernel/bad.ts', 'bench/bad.ts', 'chaos/bad.ts']) {
    it(`${file} importing kernel/kernel.ts is reported`, async () => {
      const spec = path.relative(path.dirname(file), 'kernel/kernel.js');
      await expectViolation(
        file,
        `export { Kernel } from '${spec.startsWith('.') ? spec : `./${spec}`}';\n`,
        'kernelObject',
      );
    });
  }

  it('kernel/main.ts, harness/ and test files may', async () => {
    await expectClean('kernel/main.ts', "export { Kernel } from './kernel.js';\n");
    await expectClean('harness/other.ts', "export { Kernel } from '../kernel/kernel.js';\n");
    await expectClean('kernel/other.test.ts', "export { Kernel } from './kernel.js';\n");
    await expectClean('chaos/other.test.ts', "export { Kernel } from '../kernel/kernel.js';\n");
  });
});

describe('rule 6: the dashboard is browser code', () => {
  const file = 'kernel/http/dashboard/src/__fixture__.ts';
  it('the dashboard importing the kernel or the contract is reported', async () => {
    await expectViolation(file, "import { REPO_ROOT } from '../../../config.js';\n", 'dashboard');
    await expectViolation(file, "import * as p from '../../../../protocol/index.js';\n", 'dashboard');
  });
  it('its own folder and packages are allowed', async () => {
    await expectClean(
      file,
      "import { Api } from './api.js';\nimport { html } from 'lit';\nvoid Api;\nvoid html;\n",
    );
  });
});
