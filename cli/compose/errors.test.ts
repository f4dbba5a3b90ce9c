import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ComposeError, loadCompose } from './index.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** Load `yaml` from a fresh directory holding a.py and b.py; return the ComposeError it must throw. */
function failure(yaml: string, env: NodeJS.ProcessEnv = {}): ComposeError {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-compose-err-'));
  dirs.push(dir);
  for (const f of ['a.py', 'b.py']) fs.writeFileSync(path.join(dir, f), '');
  const file = path.join(dir, 'clove.yaml');
  fs.writeFileSync(file, yaml);
  try {
    loadCompose(file, { env });
  } catch (err) {
    expect(err).toBeInstanceOf(ComposeError);
    const e = err as ComposeError;
    expect(e.file).toBe(file);
    // The message is the location (the temporary file is outside the working directory: its absolute
    // path), the field, then the detail.
    expect(e.line).toBeGreaterThan(0);
    expect(e.message).toBe(`${file}:${e.line}:${e.column}: ${e.field ? `${e.field}: ` : ''}${e.detail}`);
    return e;
  }
  throw new Error(`expected ${JSON.stringify(yaml)} to fail`);
}

const at = (e: ComposeError) => ({ line: e.line, column: e.column, field: e.field });

describe('ComposeError names file, line, column and field', () => {
  it('YAML syntax', () => {
    const e = failure('agents:\n  a:\n    script: a.py\n    args: [x\n');
    expect(e.line).toBe(5);
    expect(e.detail).toMatch(/^YAML syntax: /);
    const dup = failure('agents:\n  a:\n    script: a.py\n    script: b.py\n');
    expect(dup.line).toBe(4);
    expect(dup.detail).toMatch(/unique/i);
  });

  it('unknown key, with a suggestion', () => {
    const e = failure('agents:\n  a:\n    script: a.py\n    limits:\n      memroy: 1G\n');
    expect(at(e)).toEqual({ line: 5, column: 7, field: 'agents.a.limits.memroy' });
    expect(e.detail).toBe('unknown key "memroy" (did you mean "memory"?)');
    const s = failure('agents:\n  a:\n    scrpit: a.py\n');
    expect(at(s)).toEqual({ line: 3, column: 5, field: 'agents.a.scrpit' });
    expect(s.detail).toBe('unknown key "scrpit" (did you mean "script"?)');
    const top = failure('agentz:\n  a:\n    script: a.py\n');
    expect(at(top)).toEqual({ line: 1, column: 1, field: 'agentz' });
    expect(top.detail).toBe('unknown key "agentz" (did you mean "agents"?)');
    const far = failure('agents:\n  a:\n    script: a.py\n    flavour: mint\n');
    expect(far.detail).toBe('unknown key "flavour"');
  });

  it('bad type', () => {
    const e = failure('agents:\n  a:\n    script: a.py\n    replicas: many\n');
    expect(at(e)).toEqual({ line: 4, column: 15, field: 'agents.a.replicas' });
    expect(e.detail).toBe('must be an integer (got "many")');
    const n = failure('agents:\n  a:\n    script: a.py\n    network: yes please\n');
    expect(n.detail).toBe('must be true or false (got "yes please")');
    const m = failure('agents:\n  a:\n');
    expect(at(m)).toEqual({ line: 2, column: 3, field: 'agents.a' });
    expect(m.detail).toBe('must be a mapping (got null)');
    const c = failure('agents:\n  a:\n    command: python3 a.py | tee log\n');
    expect(c.field).toBe('agents.a.command');
    expect(c.detail).toMatch(/^shell syntax "\|" needs a shell: write \["sh", "-c", /);
    const d = failure('agents:\n  a:\n    command: {x: 1}\n');
    expect(d.detail).toBe('must be a list of strings like ["python3", "agent.py"] or a command line');
  });

  it('bad size', () => {
    const e = failure('agents:\n  a:\n    script: a.py\n    limits:\n      memory: lots\n');
    expect(at(e)).toEqual({ line: 5, column: 15, field: 'agents.a.limits.memory' });
    expect(e.detail).toBe('must be a size like 512M, 1G, 64k or a number of bytes (got "lots")');
    const small = failure('agents:\n  a:\n    script: a.py\n    limits: { memory: 1k }\n');
    expect(small.field).toBe('agents.a.limits.memory');
    expect(small.detail).toBe('must be at least 4M (got 1024 bytes)');
    const q = failure('agents:\n  a:\n    script: a.py\n    quotas:\n      network_bytes: { limit: huge }\n');
    expect(at(q)).toEqual({ line: 5, column: 31, field: 'agents.a.quotas.network_bytes.limit' });
  });

  it('bad duration', () => {
    const e = failure('agents:\n  a:\n    script: a.py\n    watchdog: soon\n');
    expect(at(e)).toEqual({ line: 4, column: 15, field: 'agents.a.watchdog' });
    expect(e.detail).toMatch(/^must be a duration like 30s.* \(got "soon"\)$/);
    const r = failure('agents:\n  a:\n    script: a.py\n    restart_policy:\n      window: 1 minute\n');
    expect(at(r)).toEqual({ line: 5, column: 15, field: 'agents.a.restart_policy.window' });
    const q = failure('agents:\n  a:\n    script: a.py\n    quotas: { wall_time: forever }\n');
    expect(q.field).toBe('agents.a.quotas.wall_time');
    expect(q.detail).toMatch(/^must be a duration like 30s.*milliseconds \(got "forever"\)$/);
  });

  it('missing script, missing script file, both script and command', () => {
    const none = failure('agents:\n  a:\n    args: [x]\n');
    expect(at(none)).toEqual({ line: 3, column: 5, field: 'agents.a' });
    expect(none.detail).toBe(
      'needs `script` (a program file), `command` (an argv list) or `entry` (module:attr)',
    );
    const gone = failure('agents:\n  a:\n    script: gone.py\n');
    expect(at(gone)).toEqual({ line: 3, column: 13, field: 'agents.a.script' });
    expect(gone.detail).toMatch(/gone\.py is not a file$/);
    const both = failure('agents:\n  a:\n    script: a.py\n    command: [python3, a.py]\n');
    expect(at(both)).toEqual({ line: 3, column: 5, field: 'agents.a' });
    expect(both.detail).toBe('has both `script` and `command`: give exactly one');
  });

  it('entry: exactly one program, and module:attr with Python names', () => {
    const two = failure('agents:\n  a:\n    script: a.py\n    entry: m:x\n');
    expect(at(two)).toEqual({ line: 3, column: 5, field: 'agents.a' });
    expect(two.detail).toBe('has both `script` and `entry`: give exactly one');
    const three = failure('agents:\n  a:\n    command: [x]\n    entry: m:x\n    script: a.py\n');
    expect(three.detail).toBe('has both `script` and `command` and `entry`: give exactly one');
    for (const bad of ['graph', 'my-graph:g', 'm:', ':g', 'm:g()', 'm:1x']) {
      const e = failure(`agents:\n  a:\n    entry: "${bad}"\n`);
      expect(at(e)).toEqual({ line: 3, column: 12, field: 'agents.a.entry' });
      expect(e.detail).toBe(
        `must be module:attr with Python names, e.g. my_graph:graph (got ${JSON.stringify(bad)})`,
      );
    }
  });

  it('unknown dependency, in both forms', () => {
    const e = failure(
      'agents:\n  a:\n    script: a.py\n    depends_on: [workres]\n  workers:\n    script: b.py\n',
    );
    expect(at(e)).toEqual({ line: 4, column: 18, field: 'agents.a.depends_on[0]' });
    expect(e.detail).toBe('unknown service "workres" (did you mean "workers"?); the services are a, workers');
    const m = failure(
      'agents:\n  a:\n    script: a.py\n    depends_on:\n      ghost: { condition: healthy }\n',
    );
    expect(at(m)).toEqual({ line: 5, column: 7, field: 'agents.a.depends_on.ghost' });
    const c = failure('agents:\n  a:\n    script: a.py\n    depends_on: { a: { condition: done } }\n');
    expect(c.field).toBe('agents.a.depends_on.a.condition');
    expect(c.detail).toMatch(/^must be one of started, service_started, healthy, service_healthy/);
  });

  it('dependency cycle, naming the services', () => {
    const e = failure(
      'agents:\n  a:\n    script: a.py\n    depends_on: [b]\n  b:\n    script: b.py\n    depends_on: { c: {} }\n  c:\n    script: b.py\n    depends_on: [a]\n  d:\n    script: a.py\n',
    );
    expect(at(e)).toEqual({ line: 4, column: 17, field: 'agents.a.depends_on' });
    expect(e.detail).toBe('dependency cycle: a → b → c → a');
    const self = failure('agents:\n  a:\n    script: a.py\n    depends_on: [a]\n');
    expect(self.detail).toBe('dependency cycle: a → a');
  });

  it("a value the contract's SPAWN schema refuses, at the field it came from", () => {
    const w = failure('agents:\n  a:\n    script: a.py\n    watchdog: 2d\n');
    expect(at(w)).toEqual({ line: 4, column: 15, field: 'agents.a.watchdog' });
    expect(w.detail).toBe("SPAWN's watchdog_ms must be <= 86400000 (got 172800000)");
    const r = failure('agents:\n  a:\n    script: a.py\n    restart_policy: { window: 31d }\n');
    expect(at(r)).toEqual({ line: 4, column: 31, field: 'agents.a.restart_policy.window' });
    expect(r.detail).toMatch(/^SPAWN's restart_window must be <= 2592000/);
    const b = failure('agents:\n  a:\n    script: a.py\n    budgets: { mailbox_bytes: 10 }\n');
    expect(b.field).toBe('agents.a.budgets.mailbox_bytes');
    expect(b.detail).toMatch(/^SPAWN's budgets\.mailbox_bytes must be >= 1024 \(got 10\)$/);
  });

  it('labels: clove.* is reserved, keys follow the contract; env keys have no =', () => {
    const r = failure('agents:\n  a:\n    script: a.py\n    labels: { clove.service: x }\n');
    expect(at(r)).toEqual({ line: 4, column: 15, field: 'agents.a.labels.clove.service' });
    expect(r.detail).toBe('"clove.service": clove.* labels are set by clove up');
    const l = failure('agents:\n  a:\n    script: a.py\n    labels: ["ok=1", "clove.replica=2"]\n');
    expect(at(l)).toEqual({ line: 4, column: 22, field: 'agents.a.labels[1]' });
    const k = failure('agents:\n  a:\n    script: a.py\n    labels: { "no spaces": x }\n');
    expect(at(k)).toEqual({ line: 4, column: 15, field: 'agents.a.labels.no spaces' });
    expect(k.detail).toMatch(/^key "no spaces" keys are 1–63 letters/);
    const e = failure('agents:\n  a:\n    script: a.py\n    env: { "A=B": x }\n');
    expect(at(e)).toEqual({ line: 4, column: 12, field: 'agents.a.env.A=B' });
    expect(e.detail).toBe('key "A=B" must not contain =');
  });

  it('missing env_file', () => {
    const e = failure('agents:\n  a:\n    script: a.py\n    env_file: [a.py, missing.env]\n');
    expect(at(e)).toEqual({ line: 4, column: 22, field: 'agents.a.env_file[1]' });
    expect(e.detail).toMatch(/cannot read .*\.env: it does not exist$/);
  });

  it('quota policies, restart settings given twice, names, interpolation', () => {
    const deny = failure(
      'agents:\n  a:\n    script: a.py\n    quotas:\n      memory: { limit: 1G, policy: deny }\n',
    );
    expect(at(deny)).toEqual({ line: 5, column: 36, field: 'agents.a.quotas.memory.policy' });
    expect(deny.detail).toBe('must be one of pause, kill (got "deny")');
    const twice = failure(
      'agents:\n  a:\n    script: a.py\n    max_restarts: 3\n    restart_policy: { max_attempts: 5 }\n',
    );
    expect(at(twice)).toEqual({ line: 4, column: 19, field: 'agents.a.max_restarts' });
    expect(twice.detail).toBe('set twice: also restart_policy.max_attempts; keep one');
    const name = failure('agents:\n  Coordinator:\n    script: a.py\n');
    expect(at(name)).toEqual({ line: 2, column: 3, field: 'agents.Coordinator' });
    expect(name.detail).toMatch(/^service name "Coordinator" must be lower-case/);
    const v = failure('agents:\n  a:\n    script: a.py\n    args: ["${TOKEN:?set TOKEN first}"]\n');
    expect(at(v)).toEqual({ line: 4, column: 12, field: 'agents.a.args[0]' });
    expect(v.detail).toBe('TOKEN is not set: set TOKEN first');
    const open = failure('agents:\n  a:\n    script: a.py\n    args: ["${TOKEN"]\n');
    expect(open.detail).toMatch(/^unclosed "\$\{"/);
    const empty = failure('agents: {}\n');
    expect(at(empty)).toEqual({ line: 1, column: 9, field: 'agents' });
    expect(empty.detail).toBe('needs at least one service');
    const version = failure('version: "2"\nagents:\n  a:\n    script: a.py\n');
    expect(at(version)).toEqual({ line: 1, column: 10, field: 'version' });
    expect(version.detail).toBe('must be "1" (got "2")');
  });

  it('a missing, unreadable or empty file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-compose-err-'));
    dirs.push(dir);
    const file = path.join(dir, 'clove.yaml');
    expect(() => loadCompose(file)).toThrow(ComposeError);
    expect(() => loadCompose(file)).toThrow(/clove\.yaml: cannot read the file: it does not exist$/);
    fs.mkdirSync(file);
    expect(() => loadCompose(file)).toThrow(/cannot read the file: EISDIR/);
    fs.rmdirSync(file);
    fs.writeFileSync(file, '# nothing\n');
    expect(() => loadCompose(file)).toThrow(/the file is empty: it needs `agents:`/);
  });
});
