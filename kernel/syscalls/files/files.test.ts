/**
 * READ and WRITE against a real kernel, from real sandboxed Python agents: the agent's own view of the
 * file system and its uid, the rights' globs, symlinks and rename races, size limits, atomic writes.
 *
 * The kernel's data dir is below /var/tmp (not the private /tmp of agents), so that a directory next to
 * it can be seen by every agent: one agent's directory there is closed to the others by its owner and
 * mode alone, which is what keeps them out, not a private mount.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, type TestKernel } from '../../../harness/kernel.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';
import { Op } from '../../../protocol/index.js';

// Replies and agent answers are free-form JSON here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

const AGENT = `
import json, os, sys, threading, time, base64
from clove_sdk import CloveClient

c = CloveClient()
c.connect()
boss = int(os.environ["BOSS"])
me = c.hello()
c.send_message({"type": "up", "name": me["name"], "id": me["agent_id"], "uid": os.getuid(), "cwd": os.getcwd()}, to=boss)
while True:
    m = c.wait_message(timeout=30)
    if m is None:
        continue
    cmd = m["message"]
    scope = {"c": c, "os": os, "json": json, "threading": threading, "time": time, "base64": base64, "result": None}
    try:
        exec(cmd["code"], scope)
        out = {"ok": True, "result": scope["result"]}
    except Exception as e:
        out = {"ok": False, "error": repr(e)}
    c.send_message({"type": "answer", "id": cmd["id"], "out": out}, to=m["from"])
`;

let tk: TestKernel;
let op: CloveClient;
let dataDir: string;
let scripts: string;
let agentPy: string;
const inbox: Any[] = [];
let seq = 0;

beforeAll(async () => {
  dataDir = fs.mkdtempSync('/var/tmp/clove-files-');
  fs.chmodSync(dataDir, 0o755);
  tk = await startKernel({ dataDir: path.join(dataDir, 'data') });
  op = await tk.client();
  await op.hello();
  scripts = tempDir('clvf');
  agentPy = path.join(scripts, 'agent.py');
  fs.writeFileSync(agentPy, AGENT);
});
afterAll(async () => {
  await tk?.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
  fs.rmSync(scripts, { recursive: true, force: true });
});

let receiving: Promise<void> | null = null;

/** One RECV at a time on the operator's connection, shared by every waiter. */
function receive(ms: number): Promise<void> {
  receiving ??= op
    .recv({ max: 10, timeoutMs: ms })
    .then((r) => void inbox.push(...r.messages.map((m) => m.message)))
    .finally(() => (receiving = null));
  return receiving;
}

/** The next message from an agent that satisfies `pred`. */
async function next(pred: (m: Any) => boolean, timeoutMs = 20_000): Promise<Any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = inbox.findIndex(pred);
    if (i >= 0) return inbox.splice(i, 1)[0];
    const left = deadline - Date.now();
    if (left <= 0) throw new Error('timed out waiting for an agent');
    await receive(Math.min(left, 2000));
  }
}

interface Agent {
  name: string;
  id: number;
  uid: number;
  cwd: string;
}

async function spawnAgent(name: string, extra: Record<string, unknown> = {}): Promise<Agent> {
  const s = await op.spawn({ name, script: agentPy, env: { BOSS: String(op.agentId) }, ...extra });
  const up = await next((m) => m.type === 'up' && m.name === name);
  expect(up.id).toBe(s.id);
  return { name, id: s.id, uid: up.uid, cwd: up.cwd };
}

/** Runs Python in the agent (`c` is its client); returns what the code put in `result`. */
async function py(a: Agent, code: string, timeoutMs = 20_000): Promise<Any> {
  const id = ++seq;
  await op.send(a.name, { id, code });
  const r = await next((m) => m.type === 'answer' && m.id === id, timeoutMs);
  if (!r.out.ok) throw new Error(`${a.name}: ${r.out.error}`);
  return r.out.result;
}

const read = (a: Agent, p: string) => py(a, `result = c.read_file(${JSON.stringify(p)})`);
const write = (a: Agent, p: string, content: string, mode = 'write') =>
  py(a, `result = c.write_file(${JSON.stringify(p)}, ${JSON.stringify(content)}, ${JSON.stringify(mode)})`);

describe('READ and WRITE in the agent’s own view, as its uid', () => {
  let a: Agent;
  let b: Agent;
  beforeAll(async () => {
    // b works in a directory a can see (the data dir, work directories included, is hidden from agents),
    // closed to a by its mode and owner alone.
    const bDir = path.join(dataDir, 'shared', 'files-b');
    fs.mkdirSync(bDir, { recursive: true, mode: 0o755 });
    fs.chmodSync(path.join(dataDir, 'shared'), 0o755);
    [a, b] = await Promise.all([spawnAgent('files-a'), spawnAgent('files-b', { cwd: bDir })]);
    fs.chownSync(bDir, b.uid, b.uid);
    fs.chmodSync(bDir, 0o700);
  });

  it('writes and reads back a file in its work directory, owned by its uid', async () => {
    expect(a.uid).not.toBe(0);
    expect(await write(a, 'notes.txt', 'hello')).toMatchObject({ success: true, bytes_written: 5 });
    expect(await read(a, 'notes.txt')).toMatchObject({ success: true, content: 'hello', size: 5 });
    expect(await read(a, `${a.cwd}/./notes.txt`)).toMatchObject({ success: true, content: 'hello' });
    const host = path.join(tk.dataDir, 'work', 'files-a', 'notes.txt');
    expect(fs.readFileSync(host, 'utf8')).toBe('hello');
    expect(fs.statSync(host).uid).toBe(a.uid);
    expect(fs.statSync(host).mode & 0o777).toBe(0o644);
  });

  it('its /tmp is its own private /tmp: another agent does not see the file', async () => {
    const name = `/tmp/files-a-${process.pid}.txt`;
    expect(await write(a, name, 'private')).toMatchObject({ success: true, created: true });
    expect(await read(a, name)).toMatchObject({ success: true, content: 'private' });
    expect(await py(a, `result = open(${JSON.stringify(name)}).read()`)).toBe('private');
    expect(fs.existsSync(name)).toBe(false);
    expect(await read(b, name)).toMatchObject({ success: false, code: 'not_found', content: '', size: 0 });
  });

  it('appends', async () => {
    await write(a, 'log.txt', 'a');
    expect(await write(a, 'log.txt', 'b', 'append')).toMatchObject({ success: true, bytes_written: 1 });
    await write(a, 'log.txt', 'c', 'append');
    expect((await read(a, 'log.txt')).content).toBe('abc');
    expect(await write(a, 'fresh.txt', 'new', 'append')).toMatchObject({ success: true, created: true });
  });

  it('replaces a file atomically: a concurrent reader sees the old or the new content, no temporary file remains', async () => {
    const r = await py(
      a,
      `
n = 256 * 1024
c.write_file("atomic.txt", "A" * n)
bad = []
stop = False
def reader():
    while not stop:
        with open("atomic.txt") as f:
            s = f.read()
        if s not in ("A" * n, "B" * n):
            bad.append((len(s), s[:1]))
t = threading.Thread(target=reader)
t.start()
replies = [c.write_file("atomic.txt", ("B" if i % 2 else "A") * n) for i in range(40)]
stop = True
t.join()
result = {"bad": bad, "ok": all(r.get("success") for r in replies), "files": sorted(os.listdir("."))}
`,
    );
    expect(r.bad).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.files.filter((f: string) => f.startsWith('.clove-write'))).toEqual([]);
  });

  it('binary content travels as base64', async () => {
    const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 10]);
    const w = await py(
      a,
      `result = c.call_json(4, {"path": "bin.dat", "content": ${JSON.stringify(bytes.toString('base64'))}, "encoding": "base64"})`,
    );
    expect(w).toMatchObject({ success: true, bytes_written: 7 });
    expect(await py(a, 'result = list(open("bin.dat", "rb").read())')).toEqual([...bytes]);
    const r = await read(a, 'bin.dat');
    expect(r).toMatchObject({ success: true, encoding: 'base64', size: 7 });
    expect(Buffer.from(r.content, 'base64')).toEqual(bytes);
    // Text stays text unless base64 is asked for.
    expect((await read(a, 'notes.txt')).encoding).toBeUndefined();
    const forced = await py(a, 'result = c.call_json(3, {"path": "notes.txt", "encoding": "base64"})');
    expect(Buffer.from(forced.content, 'base64').toString()).toBe('hello');
    const badB64 = await py(
      a,
      'result = c.call_json(4, {"path": "x.dat", "content": "not base64!", "encoding": "base64"})',
    );
    expect(badB64).toMatchObject({ success: false, code: 'invalid_request', bytes_written: 0 });
  });

  it('refuses /etc/shadow, the default blocklist at any depth, and ~/.ssh-style globs', async () => {
    for (const p of ['/etc/shadow', '/etc/passwd']) {
      const r = await read(a, p);
      expect(r).toMatchObject({ success: false, code: 'permission_denied', content: '', size: 0 });
      expect(r.error).toMatch(/blocked/);
    }
    const home = (await py(a, 'result = os.environ["HOME"]')) as string;
    expect(await read(a, `${home}/.ssh/id_rsa`)).toMatchObject({ code: 'permission_denied' });
    expect(await write(a, `${home}/.ssh/keys/id_ed25519`, 'x')).toMatchObject({
      code: 'permission_denied',
      bytes_written: 0,
    });
    await py(a, 'os.makedirs("deep/er", exist_ok=True); open("deep/er/.env", "w").write("K=V")');
    for (const p of ['.env', 'deep/er/.env', 'deep/api_token.txt', 'deep/er/secrets.json'])
      expect(await write(a, p, 'x')).toMatchObject({ success: false, code: 'permission_denied' });
    expect(await read(a, 'deep/er/.env')).toMatchObject({ code: 'permission_denied' });
  });

  it("refuses another agent's directory by its uid (EACCES → permission_denied); work dirs are not even visible", async () => {
    await write(b, 'mine.txt', 'b only');
    expect(fs.statSync(path.join(b.cwd, 'mine.txt')).uid).toBe(b.uid);
    const other = path.join(b.cwd, 'mine.txt');
    const r = await read(a, other);
    expect(r).toMatchObject({ success: false, code: 'permission_denied' });
    expect(r.error).toMatch(/EACCES/);
    expect(await write(a, path.join(b.cwd, 'planted.txt'), 'x')).toMatchObject({ code: 'permission_denied' });
    expect(fs.existsSync(path.join(b.cwd, 'planted.txt'))).toBe(false);
    // The kernel's data dir is masked in an agent's namespace: another agent's work directory is not there.
    const c = await spawnAgent('files-c');
    await write(c, 'c.txt', 'c');
    expect(await read(a, path.join(c.cwd, 'c.txt'))).toMatchObject({ success: false, code: 'not_found' });
  });

  it('refuses `..` in a path', async () => {
    for (const p of ['../files-b/mine.txt', '/tmp/../etc/hostname', 'deep/../notes.txt'])
      expect(await read(a, p)).toMatchObject({ success: false, code: 'permission_denied' });
    expect(await write(a, '../escape.txt', 'x')).toMatchObject({ code: 'permission_denied' });
  });

  it('follows a symlink only inside its view, and checks where it leads', async () => {
    const other = path.join(b.cwd, 'mine.txt');
    await py(
      a,
      `
for name, target in [("to-shadow", "/etc/shadow"), ("to-passwd", "/etc/passwd"), ("to-b", ${JSON.stringify(other)}),
                     ("escape", "../../../../../../../../etc/passwd"), ("to-hostname", "/etc/hostname"), ("to-tmp", "/tmp"),
                     ("to-etc", "/etc")]:
    if os.path.lexists(name):
        os.unlink(name)
    os.symlink(target, name)
`,
    );
    for (const p of ['to-shadow', 'to-passwd', 'escape', 'to-etc/passwd']) {
      const r = await read(a, p);
      expect(r, p).toMatchObject({ success: false, code: 'permission_denied', content: '' });
      expect(r.error, p).toMatch(/blocked/);
    }
    expect(await read(a, 'to-b')).toMatchObject({ success: false, code: 'permission_denied' });
    // A symlink to a file it may read works, and means what it means to the agent.
    const own = await py(a, 'result = open("/etc/hostname").read()');
    expect(await read(a, 'to-hostname')).toMatchObject({ success: true, content: own });
    // WRITE never follows a symlink at the target; a symlinked directory is resolved and checked.
    await py(a, 'os.path.lexists("wl") and os.unlink("wl"); os.symlink("/tmp/wl-target.txt", "wl")');
    const wl = await write(a, 'wl', 'x');
    expect(wl).toMatchObject({ success: false, code: 'permission_denied' });
    expect(wl.error).toMatch(/symbolic link/);
    expect(await py(a, 'result = os.path.exists("/tmp/wl-target.txt")')).toBe(false);
    expect(await write(a, 'to-tmp/via-link.txt', 'ok')).toMatchObject({ success: true });
    expect(await py(a, 'result = open("/tmp/via-link.txt").read()')).toBe('ok');
    expect(await write(a, 'to-etc/passwd', 'root::0:0::/:/bin/sh')).toMatchObject({
      success: false,
      code: 'permission_denied',
    });
    expect((await write(a, 'to-etc/clove-new', 'x')).success).toBe(false);
  });

  it('a rename race (directory ↔ symlink swapped while READs run) never returns the target', async () => {
    const r = await py(
      a,
      `
import shutil
shutil.rmtree("race", ignore_errors=True)
os.makedirs("race/real")
open("race/real/passwd", "w").write("mine")
os.symlink("/etc", "race/link")
stop = False
def swap():
    while not stop:
        os.rename("race/real", "race/d"); os.rename("race/d", "race/real")
        os.rename("race/link", "race/d"); os.rename("race/d", "race/link")
t = threading.Thread(target=swap)
t.start()
seen = {}
leaked = []
for i in range(400):
    rep = c.read_file("race/d/passwd")
    key = "ok" if rep.get("success") else rep.get("code")
    seen[key] = seen.get(key, 0) + 1
    if rep.get("success") and rep.get("content") != "mine":
        leaked.append(rep.get("content")[:40])
stop = True
t.join()
result = {"seen": seen, "leaked": leaked}
`,
      60_000,
    );
    expect(r.leaked).toEqual([]);
    const total = Object.values(r.seen as Record<string, number>).reduce((x, y) => x + y, 0);
    expect(total).toBe(400);
    expect(
      Object.keys(r.seen).every((k) => ['ok', 'permission_denied', 'not_found', 'io_error'].includes(k)),
    ).toBe(true);
  }, 90_000);

  it('a 1-GiB sparse file is refused at once without being read; offset/length read a part of it', async () => {
    await py(a, 'f = open("big", "wb"); f.truncate(1 << 30); f.close()');
    const t0 = Date.now();
    const r = await read(a, 'big');
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(r).toMatchObject({
      success: false,
      code: 'too_large',
      content: '',
      size: 0,
      file_size: 1 << 30,
      limit: 8 * 1024 * 1024,
    });
    const part = await py(
      a,
      `result = c.call_json(3, {"path": "big", "offset": ${(1 << 30) - 4}, "length": 100})`,
    );
    expect(part).toMatchObject({ success: true, size: 4, content: '\0\0\0\0', file_size: 1 << 30 });
    const small = await py(a, 'result = c.call_json(3, {"path": "notes.txt", "max_bytes": 3})');
    expect(small).toMatchObject({ success: false, code: 'too_large', file_size: 5, limit: 3 });
    const over = await py(a, 'result = c.call_json(3, {"path": "notes.txt", "max_bytes": 1 << 30})');
    expect(over).toMatchObject({ success: false, code: 'invalid_request' });
  });

  it('refuses what is not a regular file, and a missing directory', async () => {
    expect(await read(a, '.')).toMatchObject({ success: false, code: 'io_error', errno: 'EISDIR' });
    await py(a, 'os.path.lexists("fifo") or os.mkfifo("fifo")');
    const t0 = Date.now();
    expect(await read(a, 'fifo')).toMatchObject({ success: false, code: 'io_error' });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(await write(a, 'fifo', 'x')).toMatchObject({ success: false, code: 'io_error' });
    expect(await write(a, 'no/such/dir.txt', 'x')).toMatchObject({ success: false, code: 'not_found' });
    expect(await read(a, 'missing.txt')).toMatchObject({ success: false, code: 'not_found' });
    expect(await read(a, '')).toMatchObject({ success: false, code: 'invalid_request', content: '' });
    // The script's directory is shared read-only.
    expect((await write(a, path.join(scripts, 'agent.py'), 'x')).success).toBe(false);
    expect(fs.readFileSync(agentPy, 'utf8')).toBe(AGENT);
  });

  it('counts the bytes an agent read and wrote (METRICS_AGENT kernel_stats)', async () => {
    const m = (await op.call<{ metrics: Any }>(Op.METRICS_AGENT, { agent_id: a.id })).metrics;
    expect(m.kernel_stats.bytes_read).toBeGreaterThan(0);
    expect(m.kernel_stats.bytes_written).toBeGreaterThan(256 * 1024);
  });
});

describe('rights: presets and allow lists', () => {
  it('standard reads and writes; readonly only reads; minimal neither', async () => {
    const [std, ro, min] = await Promise.all([
      spawnAgent('files-std', { level: 'standard' }),
      spawnAgent('files-ro', { level: 'readonly' }),
      spawnAgent('files-min', { level: 'minimal' }),
    ]);
    expect(await write(std, 'x.txt', 'x')).toMatchObject({ success: true });
    expect(await read(std, '/etc/hostname')).toMatchObject({ success: true });
    expect(await read(ro, '/etc/hostname')).toMatchObject({ success: true });
    expect(await write(ro, 'x.txt', 'x')).toMatchObject({ success: false, code: 'permission_denied' });
    expect(await read(min, '/etc/hostname')).toMatchObject({ success: false, code: 'permission_denied' });
    expect(await write(min, 'x.txt', 'x')).toMatchObject({ success: false, code: 'permission_denied' });
  });

  it('an absolute path outside the allow list is refused (sandboxed preset: /tmp/* and /home/*)', async () => {
    const s = await spawnAgent('files-sbx', { level: 'sandboxed' });
    expect(await write(s, '/tmp/ok.txt', 'ok')).toMatchObject({ success: true });
    expect(await read(s, '/tmp/ok.txt')).toMatchObject({ success: true, content: 'ok' });
    const r = await read(s, '/etc/hostname');
    expect(r).toMatchObject({ success: false, code: 'permission_denied' });
    expect(r.error).toMatch(/not in filesystem.read/);
    expect(await write(s, 'in-workdir.txt', 'x')).toMatchObject({ code: 'permission_denied' });
    // `*` does not cross a slash: /tmp/* is a direct child of /tmp.
    await py(s, 'os.makedirs("/tmp/sub", exist_ok=True)');
    expect(await write(s, '/tmp/sub/deeper.txt', 'x')).toMatchObject({ code: 'permission_denied' });
    // A symlink inside the allowed tree to a path outside it is checked where it leads.
    await py(s, 'os.path.lexists("/tmp/out") or os.symlink("/etc/hostname", "/tmp/out")');
    expect(await read(s, '/tmp/out')).toMatchObject({ code: 'permission_denied' });
  });

  it('custom globs: ** crosses directories, blocked entries cover what is below them', async () => {
    const g = await spawnAgent('files-glob', {
      permissions: {
        filesystem: { read: ['/tmp/**'], write: ['/tmp/**'], blocked: ['/tmp/vault'] },
      },
    });
    expect(await write(g, '/tmp/a/b/c.txt', 'x')).toMatchObject({ code: 'not_found' });
    await py(g, 'os.makedirs("/tmp/a/b", exist_ok=True); os.makedirs("/tmp/vault/inner", exist_ok=True)');
    expect(await write(g, '/tmp/a/b/c.txt', 'deep')).toMatchObject({ success: true });
    expect(await read(g, '/tmp/a/b/c.txt')).toMatchObject({ success: true, content: 'deep' });
    expect(await write(g, '/tmp/vault/inner/k', 'x')).toMatchObject({ code: 'permission_denied' });
    expect(await read(g, g.cwd + '/anything')).toMatchObject({ code: 'permission_denied' });
  });
});

describe('operators and unsandboxed agents: the host, with the kernel’s uid', () => {
  it('an operator reads and writes host paths; relative paths are refused', async () => {
    const dir = tempDir('clvo');
    const file = path.join(dir, 'op.txt');
    fs.writeFileSync(file, 'host');
    fs.chmodSync(file, 0o600);
    expect(await op.call(Op.READ, { path: file })).toMatchObject({ success: true, content: 'host', size: 4 });
    expect(await op.call(Op.WRITE, { path: file, content: 'changed' })).toMatchObject({
      success: true,
      bytes_written: 7,
    });
    expect(fs.readFileSync(file, 'utf8')).toBe('changed');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    await expect(op.call(Op.READ, { path: 'op.txt' })).rejects.toThrow(/absolute/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("an unsandboxed agent sees the host's /tmp", async () => {
    const dir = tempDir('clvu');
    const file = path.join(dir, 'host.txt');
    fs.writeFileSync(file, 'from the host');
    const u = await spawnAgent('files-unsbx', { sandboxed: false });
    expect(await read(u, file)).toMatchObject({ success: true, content: 'from the host' });
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
