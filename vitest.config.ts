import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: [
      'protocol/**/*.test.ts',
      'kernel/**/*.test.ts',
      'cli/**/*.test.ts',
      'sdk/typescript/**/*.test.ts',
      'harness/**/*.test.ts',
      'chaos/**/*.test.ts',
      'ci/**/*.test.ts',
      'bench/messaging.test.ts',
      'deploy/**/*.test.ts',
    ],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests start real kernels and real processes; two cores do not like many at once.
    fileParallelism: true,
    maxWorkers: 2,
    coverage: {
      provider: 'v8',
      include: [
        'protocol/**/*.ts',
        'kernel/**/*.ts',
        'cli/**/*.ts',
        'sdk/typescript/**/*.ts',
        'harness/**/*.ts',
      ],
      exclude: ['**/*.test.ts', 'kernel/http/dashboard/**'],
      reporter: ['text-summary', 'json-summary'],
      reportsDirectory: 'reports/coverage',
    },
  },
});
