/**
 * The security suite (issue 10, "Done when"). One kernel PROCESS (`clove kernel`, default options) and a
 * bystander agent that SENDs and RECVs in a loop (agents/bystander.py) for the whole suite; hostile
 * SANDBOXED agents (agents/attacker.py, operator-spawned, DEFAULT rights — `standard` — unless a case
 * needs other rights, said where it does) try, one at a time:
 *
 *   - to raise their own rights, and to act on another agent;
 *   - to read files they must not: /etc/shadow, the kernel's ~/.ssh, another agent's work directory, a
 *     file outside their tree through `..`, an absolute path, a symlink they planted, a rename race;
 *   - shell injection through EXEC (`command`, `cwd`; an allow list without a shell) and HTTP (method,
 *     headers, URL, body): nothing runs, no marker file is ever created;
 *   - HTTP to hosts that only look allowed, to loopback (every spelling), private and metadata
 *     addresses, a name that resolves to loopback, and through a redirect;
 *   - to exhaust: a 1-GiB sparse file, an EXEC that never ends, a fork bomb through EXEC.
 *
 * For each attempt: the error code of the reply, and its audit entry (read by the operator through
 * GET_AUDIT_LOG) naming the agent by id and name: SECURITY / PERMISSION_DENIED for a denial, SECURITY /
 * REQUEST_REFUSED for any other refusal of a call that touches the world (an EXEC `cwd` with shell text,
 * an injected HTTP method or header, a 1-GiB READ). What the sandbox itself prevents (EACCES/ENOENT
 * inside the agent's own process, a directory that is not in its view, the pids limit) is said so in
 * the table. After each group: the kernel process is alive, an operator connects and gets HELLO within
 * a second, and the bystander lost nothing, got no error and kept its round trips short. The table
 * attempt → code → audited is printed at the end; the last test fails while any refusal that was a
 * reply left no entry.

 * Servers on 127.0.0.1 stand for the internet (the machine has no other network): `pub` is the one the
 * HTTP agents' lists name as `127.0.0.1:<port>`, `hidden` another port that must stay out of reach.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { startKernelProcess, until, type KernelProcess } from '../../harness/kernel.js';
import { CloveClient } from '../../sdk/typescript/client.js';

// Agent answers, replies and audit entries are free-form JSON here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

const ATTACKER = path.join(import.meta.dirname, 'agents', 'attacker.py');
const BYSTANDER = path.join(import.meta.dirname, 'agents', 'bystander.py');
/** An operator's HELLO on a fresh connection must come back within this, whatever an agent does. */
const HELLO_WITHIN_MS = 1000;
/** The bystander's longest SEND → RECV round trip allowed in a group. */
const BYSTANDER_RTT_MS = 1000;

interface Agent {
  name: string;
  id: number;
  uid: number;
  cwd: string;
  home: string;
}
interface Row {
  group: string;
  attempt: string;
  code: string;
  audited: string;
}
interface AuditEntry {
  id: number;
  category: string;
  event_type: string;
  agent_id: number;
  agent_name?: string;
  success: boolean;
  details: Record<string, Any>;
}

const rows: Row[] = [];
let group = '';

let kp: KernelProcess;
let op: CloveClient; // the operator: spawns, sends commands, reads the audit log
let col: CloveClient; // the collector: every agent reports to it (REPORT_TO)
let me = 0;
let opId = 0;
const inbox: Any[] = [];
let collecting = true;
let collector: Promise<void> = Promise.resolve();
let collectError: string | undefined;
let seq = 0;
let bystander: Agent & { pid: number };
let attacker: Agent;
const t0 = performance.now();

// ---------------------------------------------------------------------------------------------------
// the rig

async function collect(): Promise<void> {
  while (collecting) {
    try {
      const r = await col.recv({ max: 100, timeoutMs: 300 });
      for (const m of r.messages) inbox.push({ ...(m.message as object), _from: m.from });
    } catch (e) {
      if (collecting) collectError = String(e);
      return;
    }
  }
}

/** The next collected message that satisfies `pred`. */
async function next(pred: (m: Any) => boolean, timeoutMs = 20_000, what = 'a message'): Promise<Any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = inbox.findIndex(pred);
    if (i >= 0) return inbox.splice(i, 1)[0];
    if (collectError) throw new Error(`the collector stopped: ${collectError}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function spawnAttacker(name: string, extra: Record<string, unknown> = {}): Promise<Agent> {
  const s = await op.spawn({
    name,
    script: ATTACKER,
    restart_policy: 'never',
    env: { REPORT_TO: String(me) },
    ...extra,
  });
  const up = await next((m) => m.t === 'up' && m.name === name, 20_000, `${name} up`);
  expect(up.id).toBe(s.id);
  return { name, id: s.id, uid: up.uid, cwd: up.cwd, home: up.home };
}

/** Runs Python in the agent (`c` is its client); returns what the code left in `result`. */
async function py(a: Agent, code: string, timeoutMs = 30_000): Promise<Any> {
  const id = ++seq;
  await op.send(a.name, { do: 'py', id, code });
  const r = await next((m) => m.t === 'answer' && m.id === id, timeoutMs, `${a.name}'s answer #${id}`);
  if (!r.ok) throw new Error(`${a.name}: ${r.error}`);
  return r.result;
}

/** The newest audit entry id: attempts are audited after it. */
async function auditMark(): Promise<number> {
  const r = (await op.getAuditLog({ limit: 1 })) as Any;
  return r.entries.length ? r.entries[r.entries.length - 1].id : 0;
}

/** Denials of `a` audited after `since`. */
async function denials(a: Agent, since: number): Promise<AuditEntry[]> {
  const r = (await op.getAuditLog({
    category: 'SECURITY',
    agent_id: a.id,
    since_id: since,
    limit: 1000,
  })) as Any;
  return (r.entries as AuditEntry[]).filter(
    (e) => e.event_type === 'PERMISSION_DENIED' || e.event_type === 'REQUEST_REFUSED',
  );
}

/**
 * One attempt of agent `a`: the Python `code` leaves the kernel's reply in `result`. It must be refused
 * with `code`; a denial must be audited (SECURITY, PERMISSION_DENIED, naming the agent, the syscall).
 */
async function attempt(
  a: Agent,
  label: string,
  pycode: string,
  want: { code: string; syscall: string; error?: RegExp },
): Promise<Any> {
  const since = await auditMark();
  const reply = await py(a, pycode);
  const entry = await denial(a, want.syscall, since);
  // The row first: the table says what happened, even when an expectation below fails.
  rows.push({ group, attempt: label, code: codeOf(reply), audited: auditWords(entry) });
  // Soft: the test goes on to its other attempts (and rows), and fails at its end.
  expect.soft(reply, label).toMatchObject({ success: false, code: want.code });
  if (want.error) expect.soft(reply.error, label).toMatch(want.error);
  expectAudited(a, label, want.syscall, entry);
  return reply;
}

const codeOf = (reply: Any): string =>
  reply?.success === false ? String(reply.code) : 'none (it succeeded)';
const auditWords = (e: AuditEntry | undefined): string =>
  e ? `yes: #${e.id} ${e.category}/${e.event_type} ${e.agent_name ?? '(NO NAME)'}#${e.agent_id}` : 'NO';

/** The audit entry of a denial of `a` for `syscall` after `since`, if there is one. */
async function denial(a: Agent, syscall: string, since: number): Promise<AuditEntry | undefined> {
  return (await denials(a, since)).find((e) => e.details.syscall === syscall);
}

/**
 * A refusal is audited: SECURITY, PERMISSION_DENIED (or REQUEST_REFUSED for other refusals of READ,
 * WRITE, EXEC, HTTP, THINK), naming the agent (id and name) and the syscall.
 */
function expectAudited(a: Agent, label: string, syscall: string, entry: AuditEntry | undefined): void {
  expect.soft(entry, `${label}: a SECURITY entry for ${syscall} by ${a.name}`).toBeDefined();
  if (entry)
    expect.soft(entry, label).toMatchObject({
      category: 'SECURITY',
      // A denial by the rights; any other refusal of a call that touches the world (REQUEST_REFUSED).
      event_type: entry.details.code === 'permission_denied' ? 'PERMISSION_DENIED' : 'REQUEST_REFUSED',
      agent_id: a.id,
      agent_name: a.name,
      success: false,
      details: { syscall },
    });
}

/** A row for what is not a refusal reply (sent as data, stopped by the sandbox, killed at a limit). */
function note(attempt: string, code: string, audited: string): void {
  rows.push({ group, attempt, code, audited });
}

/** The kernel is alive, an operator is served at once, the bystander lost nothing and waited little. */
async function checkpoint(): Promise<void> {
  expect(kp.child.exitCode, 'the kernel process is alive').toBeNull();
  expect(kp.child.signalCode).toBeNull();
  const t = performance.now();
  const fresh = await CloveClient.connect({ socketPath: kp.socketPath, timeoutMs: 5000 });
  try {
    expect(await fresh.hello()).toMatchObject({ success: true, role: 'operator' });
  } finally {
    fresh.close();
  }
  expect(performance.now() - t, 'an operator connects and gets HELLO').toBeLessThan(HELLO_WITHIN_MS);
  // A report; after a short group (a few ms) the bystander may not have sent since the last one: ask
  // again a little later (keeping going is progress over time, not within any 20 ms).
  let r: Any;
  for (let tries = 0; ; tries++) {
    for (let i; (i = inbox.findIndex((m) => m.t === 'report')) >= 0;) inbox.splice(i, 1); // stale ones
    await op.send(bystander.name, { cmd: 'report' });
    r = await next((m) => m.t === 'report', 10_000, 'the bystander report');
    if (r.sent > lastSent || tries >= 10) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  expect(r.pid, 'the bystander was never restarted').toBe(bystander.pid);
  expect(r.errors, 'the bystander got no error').toEqual({});
  expect(r.gaps, 'the bystander lost no message').toBe(0);
  expect(r.got).toBeGreaterThanOrEqual(r.sent - 1);
  expect(r.sent, 'the bystander keeps going').toBeGreaterThan(lastSent);
  expect(r.window_max_rtt_ms, 'the bystander round trip').toBeLessThan(BYSTANDER_RTT_MS);
  lastSent = r.sent;
  const info = (await op.list()).find((x) => x.id === bystander.id) as Any;
  expect(info?.state).toBe('RUNNING');
  bystanderReports.push({ group, ...r });
}
let lastSent = 0;
const bystanderReports: Any[] = [];

// ---------------------------------------------------------------------------------------------------
// local servers standing for the internet

interface Server {
  server: http.Server;
  port: number;
  base: string;
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[];
}

async function serve(
  handler: (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void,
): Promise<Server> {
  const seen: Server['seen'] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      handler(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return { server, port, seen, base: `http://127.0.0.1:${port}` };
}

let pub: Server;
let hidden: Server;
const MARK = path.join(os.tmpdir(), `clove-sec-pwned-${process.pid}`);
/** A file only the kernel's uid may read, in a directory every uid may enter (so EACCES is the file's). */
let secretDir: string;
let secret: string;

beforeAll(async () => {
  fs.rmSync(MARK, { force: true });
  secretDir = fs.mkdtempSync('/var/tmp/clove-sec-');
  fs.chmodSync(secretDir, 0o711);
  secret = path.join(secretDir, 'secret.txt');
  fs.writeFileSync(secret, 'the kernel owner’s secret', { mode: 0o600 });
  hidden = await serve((_q, _b, res) => res.end('secret of another port'));
  pub = await serve((req, body, res) => {
    const u = new URL(req.url!, 'http://x');
    if (u.pathname === '/echo')
      return res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
    if (u.pathname === '/redirect') return res.writeHead(302, { location: u.searchParams.get('to')! }).end();
    res.end('ok');
  });
  kp = await startKernelProcess({ extra: ['--log-level', 'warn'] });
  op = await CloveClient.connect({ socketPath: kp.socketPath, timeoutMs: 60_000 });
  col = await CloveClient.connect({ socketPath: kp.socketPath });
  me = (await col.hello()).agent_id;
  opId = (await op.hello()).agent_id;
  collector = collect();
  const s = await op.spawn({
    name: 'sec-bystander',
    script: BYSTANDER,
    restart_policy: 'never',
    env: { REPORT_TO: String(me) },
  });
  const up = await next((m) => m.t === 'up' && m.name === 'sec-bystander', 20_000, 'the bystander');
  bystander = { name: 'sec-bystander', id: s.id, uid: 0, cwd: '', home: '', pid: up.pid };
  attacker = await spawnAttacker('sec-attacker');
  await until(async () => {
    await op.send(bystander.name, { cmd: 'report' });
    const r = await next((m) => m.t === 'report', 5000, 'the bystander report');
    lastSent = r.sent;
    return r.got > 5;
  }, 20_000);
}, 60_000);

afterEach(async () => {
  await checkpoint();
});

afterAll(async () => {
  collecting = false;
  await collector.catch(() => {});
  op?.close();
  col?.close();
  await kp?.stop();
  if (kp) fs.rmSync(path.dirname(kp.socketPath), { recursive: true, force: true });
  for (const s of [pub?.server, hidden?.server]) s?.close();
  fs.rmSync(secretDir, { recursive: true, force: true });
  fs.rmSync(MARK, { force: true });
  printTable();
});

function printTable(): void {
  const w = [
    Math.max(...rows.map((r) => r.attempt.length), 7),
    Math.max(...rows.map((r) => r.code.length), 4),
  ];
  const lines = [
    `security suite: ${rows.length} attempts in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    `${'attempt'.padEnd(w[0])} | ${'code'.padEnd(w[1])} | audited`,
    `${'-'.repeat(w[0])}-+-${'-'.repeat(w[1])}-+-${'-'.repeat(40)}`,
  ];
  let g = '';
  for (const r of rows) {
    if (r.group !== g) {
      g = r.group;
      lines.push(`[${g}]`);
    }
    lines.push(`${r.attempt.padEnd(w[0])} | ${r.code.padEnd(w[1])} | ${r.audited}`);
  }
  lines.push(
    'bystander after each group (sent, got, gaps, errors, longest round trip ms): ' +
      bystanderReports
        .map((r) => `${r.sent}/${r.got}/${r.gaps}/${Object.keys(r.errors).length}/${r.window_max_rtt_ms}`)
        .join(' '),
  );
  console.log(lines.join('\n'));
}

const j = JSON.stringify;

// ---------------------------------------------------------------------------------------------------

describe('raising its own rights', () => {
  it('SET_PERMS on itself to more rights is refused; its rights stay standard', async () => {
    group = 'rights';
    await attempt(
      attacker,
      'SET_PERMS self level=unrestricted',
      'result = c.set_permissions(level="unrestricted")',
      {
        code: 'permission_denied',
        syscall: 'SET_PERMS',
        error: /only narrow/,
      },
    );
    await attempt(
      attacker,
      'SET_PERMS self permissions="unrestricted"',
      'result = c.call_json(SyscallOp.SYS_SET_PERMS, {"permissions": "unrestricted"})',
      { code: 'permission_denied', syscall: 'SET_PERMS' },
    );
    await attempt(
      attacker,
      'SET_PERMS self {can_spawn, network *, exec *}',
      'result = c.set_permissions({"can_spawn": True, "can_http": True, "network": ["*"], "exec": ["*"]})',
      { code: 'permission_denied', syscall: 'SET_PERMS' },
    );
    await attempt(
      attacker,
      'SPAWN an unrestricted, unsandboxed child',
      `result = c.spawn("sec-escalate", ${j(ATTACKER)}, sandboxed=False, permissions="unrestricted")`,
      { code: 'permission_denied', syscall: 'SPAWN' },
    );
    // Emptying its blocklists is no escalation: they are always kept (docs/protocol.md, SET_PERMS).
    const emptied = await py(
      attacker,
      'result = c.set_permissions({"filesystem": {"read": [], "write": [], "blocked": []}, "blocked_commands": []})',
    );
    expect(emptied).toMatchObject({ success: true });
    const perms = await py(attacker, 'result = c.get_permissions()');
    expect(perms).toMatchObject({ success: true, agent_id: attacker.id, level: 'standard' });
    expect(perms.permissions).toMatchObject({ can_spawn: false, can_http: false, network: [] });
    expect(perms.permissions.filesystem.blocked).toEqual(expect.arrayContaining(['/etc/shadow', '~/.ssh/*']));
    note('SET_PERMS self, blocklists emptied', 'none: a no-op', 'n/a (blocklists are always kept)');
  });

  it('SET_PERMS on a parent agent is refused; nor can the parent hand out what it lacks', async () => {
    // A parent AGENT (it needs can_spawn to have children: the one right this case adds) and its child.
    const parent = await spawnAttacker('sec-parent', { permissions: { can_spawn: true } });
    const parentPerms = (await op.getPerms(parent.id)).permissions;
    expect(parentPerms).toMatchObject({ can_spawn: true, can_http: false });
    const child = await py(
      parent,
      `
shutil.copy(${j(ATTACKER)}, "child.py")
result = c.spawn("sec-child", os.path.abspath("child.py"), restart_policy="never", env={"REPORT_TO": os.environ["REPORT_TO"]})
`,
    );
    expect(child).toMatchObject({ success: true, name: 'sec-child' });
    const up = await next((m) => m.t === 'up' && m.name === 'sec-child', 20_000, 'sec-child up');
    const kid: Agent = { name: 'sec-child', id: child.id, uid: up.uid, cwd: up.cwd, home: up.home };
    for (const level of ['unrestricted', 'minimal'])
      await attempt(
        kid,
        `SET_PERMS parent agent level=${level}`,
        `result = c.set_permissions(level="${level}", agent_id=${parent.id})`,
        { code: 'permission_denied', syscall: 'SET_PERMS' },
      );
    await attempt(
      kid,
      'KILL parent agent',
      `result = c.call_json(SyscallOp.SYS_KILL, {"id": ${parent.id}})`,
      {
        code: 'permission_denied',
        syscall: 'KILL',
      },
    );
    await attempt(
      parent,
      'SPAWN a child with more rights than its own',
      `result = c.spawn("sec-child2", os.path.abspath("child.py"), permissions="unrestricted")`,
      { code: 'permission_denied', syscall: 'SPAWN' },
    );
    await attempt(
      parent,
      'SPAWN an unsandboxed child',
      `result = c.spawn("sec-child3", os.path.abspath("child.py"), sandboxed=False)`,
      { code: 'permission_denied', syscall: 'SPAWN' },
    );
    // Nothing changed: the parent keeps exactly the rights it was spawned with.
    expect((await op.getPerms(parent.id)).permissions).toEqual(parentPerms);
    await op.kill(kid.id);
    await op.kill(parent.id);
  });

  it('SET_PERMS and GET_PERMS on the operator that spawned it are refused and audited', async () => {
    // An operator-spawned agent's parent is the operator's connection.
    const mine = (await op.list()).find((x) => x.id === attacker.id) as Any;
    expect(mine.parent_id).toBe(opId);
    await attempt(
      attacker,
      'SET_PERMS parent (operator) level=minimal',
      `result = c.set_permissions(level="minimal", agent_id=${opId})`,
      { code: 'permission_denied', syscall: 'SET_PERMS' },
    );
    await attempt(attacker, 'GET_PERMS parent (operator)', `result = c.get_permissions(${opId})`, {
      code: 'permission_denied',
      syscall: 'GET_PERMS',
    });
    expect((await op.getPerms()).level).toBe('unrestricted');
  });
});

describe('acting on another agent', () => {
  it('KILL, PAUSE, RESUME, SET_PERMS, GET_PERMS, METRICS_AGENT of a sibling are refused', async () => {
    group = 'another agent';
    const b = bystander.id;
    for (const [label, code, syscall] of [
      ['KILL sibling by id', `c.call_json(SyscallOp.SYS_KILL, {"id": ${b}})`, 'KILL'],
      ['KILL sibling by name', `c.call_json(SyscallOp.SYS_KILL, {"name": "sec-bystander"})`, 'KILL'],
      ['PAUSE sibling', `c.call_json(SyscallOp.SYS_PAUSE, {"id": ${b}})`, 'PAUSE'],
      ['RESUME sibling', `c.call_json(SyscallOp.SYS_RESUME, {"id": ${b}})`, 'RESUME'],
      ['SET_PERMS sibling level=minimal', `c.set_permissions(level="minimal", agent_id=${b})`, 'SET_PERMS'],
      ['GET_PERMS sibling', `c.get_permissions(${b})`, 'GET_PERMS'],
      ['METRICS_AGENT sibling', `c.get_agent_metrics(${b})`, 'METRICS_AGENT'],
      ['METRICS_CGROUP of the sibling', `c.get_cgroup_metrics("clove/sec-bystander_${b}")`, 'METRICS_CGROUP'],
    ])
      await attempt(attacker, label, `result = ${code}`, { code: 'permission_denied', syscall });
    // What an agent may list of the others: itself.
    expect((await py(attacker, 'result = [a["id"] for a in c.list_agents()]')) as number[]).toEqual([
      attacker.id,
    ]);
  });

  it('a forged header id is ignored: the call is the connection’s, and so is the message it sends', async () => {
    // KILL with the operator's id in the header: still the attacker's call, refused and audited as its.
    const since = await auditMark();
    const k = await py(attacker, `result = raw(SyscallOp.SYS_KILL, {"id": ${bystander.id}}, ${opId})`);
    const entry = await denial(attacker, 'KILL', since);
    rows.push({
      group,
      attempt: 'KILL sibling, header agent_id=<operator>',
      code: codeOf(k.reply),
      audited: auditWords(entry),
    });
    expect(k.header_agent_id).toBe(attacker.id);
    expect(k.reply).toMatchObject({ success: false, code: 'permission_denied' });
    expectAudited(attacker, 'forged KILL', 'KILL', entry);
    // SEND with the bystander's id in the header, to the collector and to the bystander itself.
    const s1 = await py(
      attacker,
      `result = raw(SyscallOp.SYS_SEND, {"to": ${me}, "message": {"t": "forged"}}, ${bystander.id})`,
    );
    expect(s1).toMatchObject({ header_agent_id: attacker.id, reply: { success: true } });
    const got = await next((m) => m.t === 'forged', 5000, 'the forged message');
    expect(got._from, 'the message is from the attacker, whatever its header said').toBe(attacker.id);
    const s2 = await py(
      attacker,
      `result = raw(SyscallOp.SYS_SEND, {"to": ${bystander.id}, "message": {"t": "b", "n": 1}}, ${bystander.id})`,
    );
    expect(s2.reply).toMatchObject({ success: true });
    await op.send(bystander.name, { cmd: 'report' });
    const r = await next((m) => m.t === 'report', 10_000, 'the bystander report');
    expect(r.gaps).toBe(0);
    expect(r.foreign).toContainEqual({ from: attacker.id, from_name: attacker.name, n: 1 });
    note(
      'SEND with header agent_id=<bystander>',
      'none: delivered',
      `n/a (not acting as another: from=${attacker.id})`,
    );
  });
});

describe('reading files it must not', () => {
  let confined: Agent;
  beforeAll(async () => {
    // Something of the bystander's in its work directory, for the attacker to look for.
    fs.writeFileSync(path.join(kp.dataDir, 'work', 'sec-bystander', 'diary.txt'), 'the bystander’s own');
    // An agent whose rights confine its READs to its own tree (the one case with narrower rights).
    const cwd = path.join(kp.dataDir, 'work', 'sec-confined');
    confined = await spawnAttacker('sec-confined', {
      permissions: { filesystem: { read: [`${cwd}/**`], write: [`${cwd}/**`] } },
    });
    expect(confined.cwd).toBe(cwd);
  });

  /** READ through the kernel, and open() in the agent's own process (what the sandbox lets it do). */
  const both = (p: string) =>
    `result = {"read": c.read_file(${j(p)}), "open": os_error(lambda: open(${j(p)}, "rb").read(1))}`;

  it('/etc/shadow, /etc/passwd, the kernel’s ~/.ssh and its own', async () => {
    group = 'files';
    for (const [label, p] of [
      ['READ /etc/shadow', '/etc/shadow'],
      ['READ /etc/passwd', '/etc/passwd'],
      [`READ the kernel's ~/.ssh/id_rsa`, path.join(os.homedir(), '.ssh', 'id_rsa')],
      [`READ the kernel's ~/.ssh/authorized_keys`, path.join(os.homedir(), '.ssh', 'authorized_keys')],
      [`READ its own ~/.ssh/id_ed25519`, path.join(attacker.home, '.ssh', 'id_ed25519')],
      ['READ <cwd>/.env', '.env'],
    ]) {
      const r = await attempt(attacker, label, `result = c.read_file(${j(p)})`, {
        code: 'permission_denied',
        syscall: 'READ',
        error: /blocked/,
      });
      expect(r).toMatchObject({ content: '', size: 0 });
    }
    const own = await py(attacker, `result = os_error(lambda: open("/etc/shadow", "rb").read(1))`);
    expect(own).toBe('EACCES');
    note('open("/etc/shadow") in its own process', own, 'n/a: the sandbox (its uid), no syscall');
  });

  it('another agent’s work directory is not in its view', async () => {
    const target = path.join(kp.dataDir, 'work', 'sec-bystander', 'diary.txt');
    const r = await py(attacker, both(target));
    note(
      "READ the bystander's work dir file",
      codeOf(r.read),
      'n/a: not in its view (the sandbox: mount namespace)',
    );
    expect(r.read).toMatchObject({ success: false, code: 'not_found', content: '' });
    expect(r.open).toBe('ENOENT');
    note("open() the bystander's work dir file", r.open, 'n/a: the sandbox (mount namespace)');
    await attempt(
      attacker,
      "READ ../sec-bystander/diary.txt ('..')",
      'result = c.read_file("../sec-bystander/diary.txt")',
      {
        code: 'permission_denied',
        syscall: 'READ',
      },
    );
  });

  it('a file outside its tree: through `..`, an absolute path, a symlink it planted', async () => {
    for (const [label, p] of [
      ["READ '..' to the secret", `${'../'.repeat(12)}${secret.slice(1)}`],
      ["READ '..' inside an absolute path", `/tmp/../${secret.slice(1)}`],
    ])
      await attempt(attacker, label, `result = c.read_file(${j(p)})`, {
        code: 'permission_denied',
        syscall: 'READ',
        error: /\.\./,
      });
    // The secret by its absolute path: opened with the agent's uid, so EACCES (the kernel is root).
    const abs = await py(attacker, both(secret));
    const since = await auditMark();
    const again = await py(attacker, `result = c.read_file(${j(secret)})`);
    rows.push({
      group,
      attempt: 'READ the secret (absolute path)',
      code: codeOf(again),
      audited: auditWords(await denial(attacker, 'READ', since)),
    });
    expect(abs.read).toMatchObject({ success: false, code: 'permission_denied', content: '' });
    expect(abs.read.error).toMatch(/EACCES/);
    expect(abs.open).toBe('EACCES');
    expectAudited(attacker, 'absolute secret', 'READ', await denial(attacker, 'READ', since));
    note('open(the secret) in its own process', abs.open, 'n/a: the sandbox (its uid)');
    // Symlinks it planted in its own directory.
    await py(
      attacker,
      `
for name, target in [("to-secret", ${j(secret)}), ("to-shadow", "/etc/shadow"),
                     ("escape", "${'../'.repeat(12)}etc/shadow"), ("to-secret-dir", ${j(secretDir)})]:
    if os.path.lexists(name):
        os.unlink(name)
    os.symlink(target, name)
`,
    );
    for (const [label, p, err] of [
      ['READ a planted symlink to the secret', 'to-secret', /EACCES/],
      ['READ a planted symlink to /etc/shadow', 'to-shadow', /blocked/],
      ["READ a planted symlink '../../..' to /etc/shadow", 'escape', /blocked/],
      ['READ through a planted symlinked directory', 'to-secret-dir/secret.txt', /EACCES/],
    ] as const)
      await attempt(attacker, label, `result = c.read_file(${j(p)})`, {
        code: 'permission_denied',
        syscall: 'READ',
        error: err,
      });
  });

  it('a rename race (a thread swaps a directory and a symlink while READs run) never leaks', async () => {
    const race = (target: string, file: string) => `
shutil.rmtree("race", ignore_errors=True)
os.makedirs("race/real")
open("race/real/${file}", "w").write("mine")
os.symlink(${j(target)}, "race/link")
stop = False
def swap():
    while not stop:
        os.rename("race/real", "race/d"); os.rename("race/d", "race/real")
        os.rename("race/link", "race/d"); os.rename("race/d", "race/link")
t = threading.Thread(target=swap)
t.start()
seen = {}
leaked = []
for i in range(200):
    rep = c.read_file("race/d/${file}")
    key = "ok" if rep.get("success") else rep.get("code") + (":" + rep["errno"] if rep.get("errno") else "")
    seen[key] = seen.get(key, 0) + 1
    if rep.get("success") and rep.get("content") != "mine":
        leaked.append(rep.get("content")[:60])
stop = True
t.join()
result = {"seen": seen, "leaked": leaked}
`;
    for (const [a, label, target, file] of [
      [attacker, 'READ during a rename race (link to the secret’s dir)', secretDir, 'secret.txt'],
      [confined, 'READ during a rename race (confined; link to /etc)', '/etc', 'hostname'],
    ] as const) {
      const since = await auditMark();
      const r = await py(a, race(target, file), 60_000);
      const denied = (await denials(a, since)).filter(
        (e) => e.details.syscall === 'READ' && e.event_type === 'PERMISSION_DENIED',
      );
      const seen = r.seen as Record<string, number>;
      rows.push({
        group,
        attempt: label,
        code: Object.entries(seen)
          .map(([k, n]) => `${k}×${n}`)
          .join(' '),
        audited: `${denied.length} of ${seen.permission_denied ?? 0} denials`,
      });
      expect(r.leaked, label).toEqual([]);
      expect(Object.values(seen).reduce((x, y) => x + y, 0)).toBe(200);
      // A swap seen mid-way fails rather than being followed: not_found, io_error (e.g. ELOOP: a symlink
      // where none may be any more), or the policy's own refusal.
      expect(
        Object.keys(seen).every((k) =>
          ['ok', 'permission_denied', 'not_found', 'io_error'].includes(k.split(':')[0]),
        ),
        j(seen),
      ).toBe(true);
      expect(denied.length).toBe(seen.permission_denied ?? 0);
      for (const e of denied) expectAudited(a, label, 'READ', e);
    }
  });

  it('an agent confined to its tree: absolute paths, `..` and symlinks out of it are refused', async () => {
    await attempt(confined, 'READ /etc/hostname (confined)', 'result = c.read_file("/etc/hostname")', {
      code: 'permission_denied',
      syscall: 'READ',
      error: /not in filesystem\.read/,
    });
    await py(
      confined,
      'os.path.lexists("out") or os.symlink("/etc/hostname", "out"); os.makedirs("sub", exist_ok=True)',
    );
    await attempt(
      confined,
      'READ a planted symlink out of its tree (confined)',
      'result = c.read_file("out")',
      {
        code: 'permission_denied',
        syscall: 'READ',
        error: /not in filesystem\.read/,
      },
    );
    await attempt(
      confined,
      "READ sub/../../x ('..', confined)",
      'result = c.read_file("sub/../../sec-bystander/diary.txt")',
      {
        code: 'permission_denied',
        syscall: 'READ',
      },
    );
    // Its own files stay readable: the refusals are the policy's, not a broken READ.
    expect(
      await py(confined, 'open("mine.txt", "w").write("x"); result = c.read_file("mine.txt")'),
    ).toMatchObject({
      success: true,
      content: 'x',
    });
  });
});

describe('shell injection', () => {
  let ex: Agent;
  const M = '/tmp/clove-sec-exec-pwned';
  beforeAll(async () => {
    // The allow list names one program and no shell.
    ex = await spawnAttacker('sec-exec', { permissions: { exec: ['/bin/echo'] } });
  });

  it('through EXEC `command`, with an allow list that has no shell: nothing runs', async () => {
    group = 'EXEC injection';
    expect(await py(ex, 'result = c.exec("echo hello")')).toMatchObject({
      success: true,
      stdout: 'hello\n',
      shell: false,
    });
    for (const command of [
      `echo hi; touch ${M}`,
      `echo hi && touch ${M}`,
      `echo hi || touch ${M}`,
      `echo hi | sh`,
      `echo $(touch ${M})`,
      `echo \`touch ${M}\``,
      `echo hi > ${M}`,
      `echo hi & touch ${M}`,
      `echo "$(touch ${M})"`,
      `echo 'unterminated`,
      `X=1 touch ${M}`,
      `touch ${M}`,
      `sh -c 'touch ${M}'`,
      `/bin/sh -c 'touch ${M}'`,
    ])
      await attempt(ex, `EXEC ${j(command)}`, `result = c.exec(${j(command)})`, {
        code: 'permission_denied',
        syscall: 'EXEC',
      });
    for (const argv of [
      ['/bin/sh', '-c', `touch ${M}`],
      ['touch', M],
      ['env', 'touch', M],
    ])
      await attempt(
        ex,
        `EXEC argv ${j(argv)}`,
        `result = c.call_json(SyscallOp.SYS_EXEC, {"argv": ${j(argv)}})`,
        { code: 'permission_denied', syscall: 'EXEC' },
      );
    // A newline separates commands for a shell: it needs one too.
    await attempt(ex, 'EXEC "echo hi\\ntouch …"', `result = c.exec(${j(`echo hi\ntouch ${M}`)})`, {
      code: 'permission_denied',
      syscall: 'EXEC',
    });
    expect(await py(ex, `result = os.path.exists(${j(M)})`)).toBe(false);
  });

  it('through EXEC `cwd`: a directory name, never shell text', async () => {
    for (const cwd of [`/tmp; touch ${M}`, `$(touch ${M})`, `/tmp && touch ${M}`, `\`touch ${M}\``]) {
      const since = await auditMark();
      const r = await py(ex, `result = c.exec("echo hi", ${j(cwd)})`);
      rows.push({
        group,
        attempt: `EXEC cwd=${j(cwd)}`,
        code: codeOf(r),
        audited: auditWords(await denial(ex, 'EXEC', since)),
      });
      expect(r, cwd).toMatchObject({ success: false, code: 'not_found', exit_code: -1, stdout: '' });
    }
    expect(await py(ex, `result = os.path.exists(${j(M)})`)).toBe(false);
  });

  it('through HTTP method, headers, URL and body: sent as data or refused, nothing runs', async () => {
    group = 'HTTP injection';
    const h = await httpAgent();
    const inj = `'; touch ${MARK}; echo '`;
    const sub = `$(touch ${MARK})`;
    const echo = `${pub.base}/echo`;
    // No can_http (default rights): refused whatever the request.
    await attempt(
      attacker,
      'HTTP with default rights (no can_http)',
      `result = c.http(${j(echo)}, "POST", None, ${j(inj)})`,
      {
        code: 'permission_denied',
        syscall: 'HTTP',
        error: /HTTP not allowed/,
      },
    );
    for (const [label, method] of [
      ['HTTP method with quotes and ;', `GET ${inj}`],
      ['HTTP method $(…)', `POST${sub}`],
      ['HTTP method with a newline', `GET\ntouch ${MARK}`],
    ]) {
      const since = await auditMark();
      const r = await py(h, `result = c.http(${j(echo)}, ${j(method)})`);
      rows.push({
        group,
        attempt: label,
        code: codeOf(r),
        audited: auditWords(await denial(h, 'HTTP', since)),
      });
      expect(r, label).toMatchObject({ success: false, code: 'invalid_request' });
    }
    {
      const since = await auditMark();
      const r = await py(h, `result = c.http(${j(echo)}, "GET", {"X-A": "a\\r\\nX-Evil: 1"})`);
      rows.push({
        group,
        attempt: 'HTTP header with CR LF',
        code: codeOf(r),
        audited: auditWords(await denial(h, 'HTTP', since)),
      });
      expect(r).toMatchObject({ success: false, code: 'invalid_request' });
    }
    const before = pub.seen.length;
    const r = await py(
      h,
      `result = [c.http(${j(echo)}, "POST", {"X-Inject": ${j(inj)}, "X-Sub": ${j(sub)}}, ${j(`\`touch ${MARK}\` ${inj} ${sub}`)}),
                 c.http(${j(`${echo}?q=${inj}&r=${sub}`)})]`,
    );
    const [post, query] = r;
    expect(post).toMatchObject({ success: true, status_code: 200 });
    const seen = JSON.parse(post.body);
    expect(seen.headers['x-inject']).toBe(inj);
    expect(seen.headers['x-sub']).toBe(sub);
    expect(seen.body).toBe(`\`touch ${MARK}\` ${inj} ${sub}`);
    const q = new URL(JSON.parse(query.body).url as string, 'http://x').searchParams;
    expect([q.get('q'), q.get('r')]).toEqual([inj, sub]);
    expect(pub.seen.length).toBe(before + 2);
    note(
      'HTTP headers with quotes, ; and $(…)',
      'none: sent as data',
      'n/a (no shell; the server got the bytes)',
    );
    note(
      'HTTP URL with quotes, ; and $(…)',
      'none: sent as data',
      'n/a (no shell; the server got the bytes)',
    );
    note(
      'HTTP body with `…`, quotes, $(…)',
      'none: sent as data',
      'n/a (no shell; the server got the bytes)',
    );
    expect(fs.existsSync(MARK), 'the marker file').toBe(false);
  });
});

describe('HTTP: domains that only look allowed, loopback, private and metadata addresses, redirects', () => {
  let named: Agent; // network: allowed.com, *.allowed.com, localhost, 127.0.0.1:<pub>
  let star: Agent; // network: *, 127.0.0.1:<pub>
  beforeAll(async () => {
    named = await httpAgent();
    star = await spawnAttacker('sec-http-star', {
      permissions: { network: ['*', `127.0.0.1:${pub.port}`], http_methods: ['*'] },
    });
  });

  it('hosts that only look like allowed.com, and loopback in every spelling, are not on the list', async () => {
    group = 'HTTP domains and addresses';
    const q = hidden.port;
    for (const url of [
      'http://evil.com?.allowed.com/',
      'http://evil.com/?.allowed.com',
      'http://allowed.com.evil.com/',
      'http://allowed.com.evil.com./',
      'http://allowed.com@evil.com/',
      'http://аllowed.com/', // a Cyrillic а
      `http://127.0.0.1:${q}/`,
      `http://127.1:${q}/`,
      `http://2130706433:${q}/`,
      `http://0x7f000001:${q}/`,
      `http://0177.0.0.1:${q}/`,
      `http://[::1]:${q}/`,
      `http://[::ffff:127.0.0.1]:${q}/`,
    ])
      await attempt(named, `HTTP ${url}`, `result = c.http(${j(url)}, timeout=5)`, {
        code: 'permission_denied',
        syscall: 'HTTP',
        error: /domain not in whitelist/,
      });
  });

  it('loopback, private and metadata addresses are refused even with `*`; so is a name resolving to loopback', async () => {
    const q = hidden.port;
    await attempt(
      named,
      `HTTP http://localhost:${q}/ (listed name → loopback)`,
      `result = c.http("http://localhost:${q}/", timeout=5)`,
      {
        code: 'permission_denied',
        syscall: 'HTTP',
        error: /loopback address/,
      },
    );
    for (const url of [
      `http://127.0.0.1:${q}/`,
      `http://2130706433:${q}/`,
      `http://[::1]:${q}/`,
      `http://localhost:${q}/`,
      'http://10.0.0.1/',
      'http://192.168.1.1/',
      'http://169.254.169.254/latest/meta-data/',
      'http://[fd00:ec2::254]/',
    ])
      await attempt(star, `HTTP ${url} (network *)`, `result = c.http(${j(url)}, timeout=5)`, {
        code: 'permission_denied',
        syscall: 'HTTP',
        error: /(loopback|private|link-local|metadata) address/,
      });
  });

  it('a redirect from the named server to another port, loopback name or metadata address is refused', async () => {
    const q = hidden.port;
    const via = (to: string) => `${pub.base}/redirect?to=${encodeURIComponent(to)}`;
    for (const [a, to, err] of [
      [named, `http://127.0.0.1:${q}/`, /redirect target not in whitelist/],
      [named, `http://localhost:${q}/`, /loopback address/],
      [star, `http://127.0.0.1:${q}/`, /loopback address/],
      [star, `http://[::1]:${q}/`, /loopback address/],
      [star, 'http://169.254.169.254/latest/meta-data/', /metadata address/],
      [star, 'http://10.0.0.1/', /private address/],
    ] as const)
      await attempt(a, `HTTP 302 → ${to} (${a.name})`, `result = c.http(${j(via(to))}, timeout=5)`, {
        code: 'permission_denied',
        syscall: 'HTTP',
        error: err,
      });
    // The same, with async: true — the denial comes with ASYNC_RESULTS, and is audited all the same.
    const since = await auditMark();
    const r = await py(
      star,
      `
acc = c.call_json(SyscallOp.SYS_HTTP, {"url": ${j(via(`http://127.0.0.1:${q}/`))}, "async": True, "timeout": 5})
res = c.async_results(10, timeout=10)
result = {"accepted": acc, "results": res}
`,
    );
    expect(r.accepted).toMatchObject({ success: true, async: true, status: 'accepted' });
    const got = r.results.results[0].result;
    const entry = await denial(star, 'HTTP', since);
    rows.push({
      group,
      attempt: `HTTP 302 → 127.0.0.1:<other port>, async`,
      code: codeOf(got),
      audited: auditWords(entry),
    });
    expect(got).toMatchObject({ success: false, code: 'permission_denied' });
    expectAudited(star, 'async redirect', 'HTTP', entry);
    expect(hidden.seen, 'the other port was never reached').toEqual([]);
  });
});

/** The HTTP agent whose list names allowed.com, *.allowed.com, localhost and 127.0.0.1:<pub> (GET, POST). */
let named: Promise<Agent> | undefined;
function httpAgent(): Promise<Agent> {
  named ??= spawnAttacker('sec-http', {
    permissions: {
      network: ['allowed.com', '*.allowed.com', 'localhost', `127.0.0.1:${pub.port}`],
      http_methods: ['GET', 'POST'],
    },
  });
  return named;
}

describe('exhaustion', () => {
  it('a 1-GiB sparse file is refused quickly (too_large), without being read', async () => {
    group = 'exhaustion';
    await py(attacker, 'f = open("big", "wb"); f.truncate(1 << 30); f.close()');
    const t = performance.now();
    const since = await auditMark();
    const r = await py(attacker, 'result = c.read_file("big")');
    const ms = performance.now() - t;
    rows.push({
      group,
      attempt: `READ a 1-GiB sparse file (${ms.toFixed(0)} ms)`,
      code: codeOf(r),
      audited: auditWords(await denial(attacker, 'READ', since)),
    });
    expect(r).toMatchObject({ success: false, code: 'too_large', content: '', size: 0, file_size: 1 << 30 });
    expect(ms).toBeLessThan(2000);
  });

  it('an EXEC that never ends is killed at its timeout', async () => {
    const t = performance.now();
    const r = await py(attacker, 'result = c.exec("sleep 1000", None, 1)');
    const ms = performance.now() - t;
    note(
      `EXEC "sleep 1000", timeout 1 s (${ms.toFixed(0)} ms)`,
      `none: timed_out, ${r.signal}`,
      'n/a (it ran, in its sandbox, and was killed)',
    );
    expect(r).toMatchObject({ success: false, exit_code: -1, signal: 'SIGKILL', timed_out: true });
    expect(ms).toBeLessThan(4000);
    expect(await py(attacker, 'result = c.exec("ps -eo comm")')).toMatchObject({ success: true });
    expect((await py(attacker, 'result = c.exec("ps -eo comm")')).stdout).not.toMatch(/sleep/);
  });

  it('a fork bomb through EXEC stops at the pids limit; the kernel answers an operator meanwhile', async () => {
    const bomb = await spawnAttacker('sec-bomb'); // default rights and limits (max_pids 64)
    const id = ++seq;
    await op.send(bomb.name, {
      do: 'py',
      id,
      code: 'result = c.exec("b(){ b | b & }; (b) & exec sleep 30", None, 3)',
    });
    await new Promise((r) => setTimeout(r, 1000));
    const hellos: number[] = [];
    let pids: Any;
    for (let i = 0; i < 6; i++) {
      const t = performance.now();
      const fresh = await CloveClient.connect({ socketPath: kp.socketPath, timeoutMs: 5000 });
      expect(await fresh.hello()).toMatchObject({ success: true, role: 'operator' });
      fresh.close();
      hellos.push(performance.now() - t);
      if (i === 2) pids = ((await op.agentMetrics(bomb.id)) as Any).metrics?.cgroup?.pids;
      await new Promise((r) => setTimeout(r, 200));
    }
    const a = await next((m) => m.t === 'answer' && m.id === id, 20_000, 'the bomb’s EXEC');
    const r = a.result;
    note(
      `EXEC fork bomb, timeout 3 s (pids ${pids?.current}/${pids?.max}; HELLO ≤ ${Math.max(...hellos).toFixed(0)} ms)`,
      `none: timed_out, ${r?.signal}`,
      'n/a (the sandbox: its pids limit)',
    );
    expect(Math.max(...hellos), 'operator HELLO during the bomb').toBeLessThan(HELLO_WITHIN_MS);
    if (pids) expect(pids.current).toBeLessThanOrEqual(pids.max);
    expect(r).toMatchObject({ success: false, exit_code: -1, timed_out: true });
    // The bomb is gone and the agent works again.
    await new Promise((res) => setTimeout(res, 300));
    expect(await py(bomb, 'result = c.exec("echo alive")')).toMatchObject({ stdout: 'alive\n' });
    await op.kill(bomb.id);
  });
});

describe('the audit log', () => {
  it('has a SECURITY entry naming the agent for every refusal that was a reply (issue 10, Done when)', () => {
    group = 'audit';
    // Every row above whose attempt was refused by a reply but left no entry naming the agent. (Denials
    // are checked where they happen; this gathers the refusals with other codes: not_found, too_large,
    // invalid_request — docs/protocol.md "Audit" records only permission_denied and quota_exceeded.)
    const missing = rows
      .filter((r) => r.audited === 'NO' || r.audited.includes('(NO NAME)'))
      .map(
        (r) =>
          `${r.attempt} → ${r.code}: ${r.audited === 'NO' ? 'not audited' : 'audited without the agent’s name'}`,
      );
    expect(missing).toEqual([]);
  });
});
