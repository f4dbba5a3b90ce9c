import fs from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { COMPOSE_SCHEMA } from './index.js';

const FILE = path.join(import.meta.dirname, 'clove.schema.json');

describe('clove.schema.json', () => {
  it('is COMPOSE_SCHEMA written out (CLOVE_WRITE_SCHEMA=1 npx vitest run cli/compose/schema.test.ts rewrites it)', async () => {
    if (process.env.CLOVE_WRITE_SCHEMA === '1') {
      const prettier = await import('prettier');
      fs.writeFileSync(
        FILE,
        await prettier.format(JSON.stringify(COMPOSE_SCHEMA), {
          ...(await prettier.resolveConfig(FILE)),
          filepath: FILE,
        }),
      );
    }
    expect(JSON.parse(fs.readFileSync(FILE, 'utf8'))).toEqual(JSON.parse(JSON.stringify(COMPOSE_SCHEMA)));
  });

  it('is a valid draft-07 schema that ajv compiles in strict mode', () => {
    const ajv = new Ajv({ strictTypes: false, allowUnionTypes: true });
    ajv.addKeyword('errorMessage');
    expect(ajv.validateSchema(COMPOSE_SCHEMA)).toBe(true);
    expect(() => ajv.compile(COMPOSE_SCHEMA)).not.toThrow();
  });
});
