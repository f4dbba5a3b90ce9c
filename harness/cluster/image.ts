/**
 * The cluster nodes' Docker image, built locally from scratch, no registry: the host's own Node binary
 * and the shared libraries it needs, the host's Python (its interpreter and standard library, no
 * site-packages), a few shell tools, and the project (dist/, node_modules/, the native addon, bin/,
 * package.json, sdk/python) at /opt/clove.
 *
 * Two images, so that a rebuild of the project does not re-import 300 MB:
 * - `clove-node-base:<hash>`: a rootfs tar imported with dockerode (`docker import`): Node, Python, libs,
 *   tools, node_modules. Its hash covers every file's path, size, mtime and mode (a stat, not a read:
 *   node_modules holds tens of thousands of files), so it is rebuilt when the lockfile's packages change.
 * - `clove-node:<hash>`: `FROM` the base, `COPY` of the project; its hash covers the project files'
 *   contents (a few MB) and the base tag.
 * A second run with nothing changed finds both tags and builds nothing.
 *
 * The tar streams come from GNU tar (`tar -c` of a staging directory of hard links, copies where a
 * hard link is impossible): no tar library of our own, and tar-fs is only dockerode's dependency, not ours.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import { REPO_ROOT, tempDir } from '../kernel.js';
import { which } from '../services.js';

/** Where the project lives in the image. */
export const IMAGE_PROJECT_DIR = '/opt/clove';
/** Label on everything the harness creates in Docker (images, containers). */
export const HARNESS_LABEL = 'clove.harness';
/** Bumped when the image's layout changes, so old tags are not reused. */
const LAYOUT_VERSION = '1';

/** Shell tools agents and operators commonly run (`command: ['sh', '-c', …]`). */
const TOOLS =
  'sh dash bash env sleep true false cat echo ls mkdir rm id kill grep head tail touch chmod mount ps'.split(
    ' ',
  );

/** Parts of Python's standard library no agent needs (tests, GUI, bundled pip, build files): ~650 MB less. */
const PY_STDLIB_SKIP = new Set([
  'test',
  'site-packages',
  'idlelib',
  'tkinter',
  'turtledemo',
  'ensurepip',
  'lib2to3',
]);

export interface NodeImage {
  /** `clove-node:<hash>`: what containers run. */
  tag: string;
  baseTag: string;
  /** The Python interpreter's path in the image (CLOVE_PYTHON). */
  python: string | null;
  /** Whether this call built the base / the project image (false: reused). */
  builtBase: boolean;
  builtProject: boolean;
}

/** One file of the image: where it comes from on the host, where it goes in the image. */
interface Entry {
  src: string;
  dest: string;
}

/** Builds the node image (or finds it built) and returns its tag. */
export async function ensureNodeImage(docker: Docker, opts: { root?: string } = {}): Promise<NodeImage> {
  const root = opts.root ?? REPO_ROOT;
  const python = resolvePython();
  const base = baseEntries(root, python);
  const baseTag = `clove-node-base:${statHash(base)}`;
  let builtBase = false;
  if (!(await imageExists(docker, baseTag))) {
    await importBase(docker, base, baseTag, python);
    builtBase = true;
  }
  const project = projectEntries(root);
  const tag = `clove-node:${contentHash(project, baseTag)}`;
  let builtProject = false;
  if (!(await imageExists(docker, tag))) {
    await buildProject(docker, project, baseTag, tag, python);
    builtProject = true;
  }
  return { tag, baseTag, python, builtBase, builtProject };
}

/**
 * Removes every harness image but `keep`, those a container uses and those younger than `minAgeMs` (old
 * project builds pile up otherwise; a base is ~400 MB). Two passes: a base goes only once the project
 * images built on it are gone.
 */
export async function pruneNodeImages(
  docker: Docker,
  keep: NodeImage,
  minAgeMs = 10 * 60_000,
): Promise<string[]> {
  const removed: string[] = [];
  for (let pass = 0; pass < 2; pass++) {
    const images = await docker.listImages({
      filters: JSON.stringify({ reference: ['clove-node', 'clove-node-base'] }),
    });
    for (const img of images) {
      const tags = img.RepoTags ?? [];
      if (tags.includes(keep.tag) || tags.includes(keep.baseTag)) continue;
      // Another checkout's run may have just built it and not yet started its containers.
      if (img.Created * 1000 > Date.now() - minAgeMs) continue;
      try {
        await docker.getImage(img.Id).remove({ force: false });
        removed.push(...tags);
      } catch {
        // used by a container, the parent of another image, or several tags: stays
      }
    }
  }
  return removed;
}

async function imageExists(docker: Docker, tag: string): Promise<boolean> {
  try {
    await docker.getImage(tag).inspect();
    return true;
  } catch {
    return false;
  }
}

/** The real interpreter behind `python3` (pyenv's shim is a shell script): its sys.executable. */
export function resolvePython(): string | null {
  const exe = process.env.CLOVE_PYTHON ?? which('python3');
  if (!exe) return null;
  try {
    const real = execFileSync(exe, ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
    return real ? fs.realpathSync(real) : null;
  } catch {
    return null;
  }
}

/** Every file below `dir` (symlinks as themselves), skipping names `skip` says no to. */
function walk(
  dir: string,
  destDir: string,
  out: Entry[],
  skip: (name: string, rel: string) => boolean = () => false,
  rel = '',
): void {
  out.push({ src: dir, dest: destDir });
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    const r = rel ? `${rel}/${d.name}` : d.name;
    if (skip(d.name, r)) continue;
    const src = path.join(dir, d.name);
    const dest = path.posix.join(destDir, d.name);
    if (d.isDirectory()) walk(src, dest, out, skip, r);
    else out.push({ src, dest });
  }
}

/** The host path of a library as the image must hold it: its own name (a symlink, often) and the file it resolves to. */
function withTarget(file: string, out: Entry[]): void {
  // Directories resolved (/lib -> /usr/lib on merged-/usr systems), the last component kept.
  const dir = fs.realpathSync(path.dirname(file));
  const own = path.join(dir, path.basename(file));
  out.push({ src: own, dest: own });
  const real = fs.realpathSync(own);
  if (real !== own) out.push({ src: real, dest: real });
}

/** Shared libraries (ldd) of the ELF files given: absolute paths, the dynamic loader included. */
function libsOf(files: string[]): Set<string> {
  const libs = new Set<string>();
  for (let i = 0; i < files.length; i += 200) {
    let out = '';
    try {
      out = execFileSync('ldd', files.slice(i, i + 200), {
        encoding: 'utf8',
        maxBuffer: 64 << 20,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      // ldd exits 1 when one of them is not dynamic (clove-init is static): its stdout is still good.
      out = String((e as { stdout?: string }).stdout ?? '');
    }
    for (const line of out.split('\n')) {
      const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
      if (m) libs.add(m[1]);
    }
  }
  return libs;
}

/** What the base image holds: Node, Python, shell tools, their libraries, node_modules. */
export function baseEntries(root: string, python: string | null): Entry[] {
  const out: Entry[] = [];
  const elves: string[] = [];
  const node = fs.realpathSync(process.execPath);
  out.push({ src: node, dest: '/usr/bin/node' });
  elves.push(node);
  for (const t of TOOLS) {
    const p = which(t);
    if (!p) continue;
    withTarget(p, out);
    elves.push(fs.realpathSync(p));
  }
  if (python) {
    // <prefix>/bin/python3.X, <prefix>/lib/libpython*.so*, <prefix>/lib/python3.X (trimmed): the prefix stays
    // where it is on the host, because the interpreter's RUNPATH names it.
    const prefix = path.dirname(path.dirname(python));
    out.push({ src: python, dest: python });
    elves.push(python);
    const lib = path.join(prefix, 'lib');
    for (const f of fs.readdirSync(lib)) {
      if (/^libpython.*\.so/.test(f)) withTarget(path.join(lib, f), out);
    }
    const ver = path.basename(python).replace(/^python/, '');
    const stdlib = path.join(lib, `python${ver}`);
    if (fs.existsSync(stdlib)) {
      walk(
        stdlib,
        stdlib,
        out,
        (name, rel) =>
          (rel === name && (PY_STDLIB_SKIP.has(name) || name.startsWith('config-'))) ||
          name.startsWith('_tkinter'),
      );
      const dyn = path.join(stdlib, 'lib-dynload');
      if (fs.existsSync(dyn)) {
        for (const f of fs.readdirSync(dyn))
          if (f.endsWith('.so') && !f.startsWith('_tkinter')) elves.push(path.join(dyn, f));
      }
    }
  }
  const modules = fs.realpathSync(path.join(root, 'node_modules'));
  // Top-level dot entries are tools' caches (vitest's .vite, .cache) that change with every test run.
  walk(
    modules,
    `${IMAGE_PROJECT_DIR}/node_modules`,
    out,
    (name, rel) => rel === name && name.startsWith('.') && name !== '.bin',
  );
  for (const e of out) if (e.src.endsWith('.node') && e.src.startsWith(modules)) elves.push(e.src);
  // The project's own addon (in the project image) links libraries too (libsimdjson, libstdc++).
  const release = path.join(root, 'native', 'build', 'Release');
  for (const f of fs.existsSync(release) ? fs.readdirSync(release) : []) {
    if (f.endsWith('.node') || f === 'clove-init') elves.push(path.join(release, f));
  }
  for (const l of libsOf(elves)) withTarget(l, out);
  // Merged /usr: /lib64 -> usr/lib64 etc. (the ELF interpreter is named /lib64/ld-linux-*.so.2).
  for (const d of ['/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32']) {
    if (fs.lstatSync(d, { throwIfNoEntry: false })?.isSymbolicLink()) out.push({ src: d, dest: d });
  }
  return out;
}

/** What the project image adds: the build, the launcher, the native addon, the Python SDK. */
function projectEntries(root: string): Entry[] {
  const out: Entry[] = [];
  const dest = (p: string) => path.posix.join(IMAGE_PROJECT_DIR, p);
  for (const d of ['dist', 'bin']) walk(path.join(root, d), dest(d), out);
  out.push({ src: path.join(root, 'package.json'), dest: dest('package.json') });
  const rel = path.join(root, 'native', 'build', 'Release');
  for (const f of fs.readdirSync(rel)) {
    if (f.endsWith('.node') || f === 'clove-init')
      out.push({ src: path.join(rel, f), dest: dest(`native/build/Release/${f}`) });
  }
  walk(
    path.join(root, 'sdk', 'python'),
    dest('sdk/python'),
    out,
    (name) => name === '__pycache__' || name === '.pytest_cache',
  );
  return out;
}

export function statHash(entries: Entry[]): string {
  const h = createHash('sha256').update(`layout ${LAYOUT_VERSION}\n`);
  for (const e of [...entries].sort((a, b) => a.dest.localeCompare(b.dest))) {
    const st = fs.lstatSync(e.src);
    const link = st.isSymbolicLink() ? fs.readlinkSync(e.src) : '';
    // A directory's own size and mtime change with its entries, which are hashed themselves.
    const meta = st.isDirectory() ? '' : `${st.size}\0${st.mtimeMs}`;
    h.update(`${e.dest}\0${meta}\0${st.mode}\0${link}\n`);
  }
  return h.digest('hex').slice(0, 16);
}

function contentHash(entries: Entry[], baseTag: string): string {
  const h = createHash('sha256').update(`layout ${LAYOUT_VERSION}\n${baseTag}\n`);
  for (const e of [...entries].sort((a, b) => a.dest.localeCompare(b.dest))) {
    const st = fs.lstatSync(e.src);
    h.update(`${e.dest}\0${st.mode}\n`);
    if (st.isSymbolicLink()) h.update(fs.readlinkSync(e.src));
    else if (st.isFile()) h.update(fs.readFileSync(e.src));
  }
  return h.digest('hex').slice(0, 16);
}

/** Lays `entries` out under `stage` as hard links (copies across file systems), directories with their modes. */
function stageEntries(stage: string, entries: Entry[]): void {
  const seen = new Set<string>();
  fs.mkdirSync(stage, { recursive: true, mode: 0o755 });
  const ensureDir = (destDir: string) => {
    const parts = destDir.split('/').filter(Boolean);
    let cur = '';
    for (const p of parts) {
      cur += `/${p}`;
      const at = path.join(stage, cur);
      if (!fs.existsSync(at)) fs.mkdirSync(at, { mode: 0o755 });
    }
  };
  for (const e of entries) {
    if (seen.has(e.dest)) continue;
    seen.add(e.dest);
    const st = fs.lstatSync(e.src);
    const at = path.join(stage, e.dest);
    ensureDir(path.posix.dirname(e.dest));
    if (st.isDirectory()) {
      if (!fs.existsSync(at)) fs.mkdirSync(at);
      fs.chmodSync(at, st.mode & 0o7777);
    } else if (st.isSymbolicLink()) {
      fs.symlinkSync(fs.readlinkSync(e.src), at);
    } else if (st.isFile()) {
      try {
        fs.linkSync(e.src, at);
      } catch {
        fs.copyFileSync(e.src, at);
        fs.chmodSync(at, st.mode & 0o7777);
      }
    }
  }
}

/** `tar -c` of a directory as a stream; rejects `done` when tar fails. */
function tarStream(dir: string): { stream: NodeJS.ReadableStream; done: Promise<void> } {
  const child = spawn('tar', ['-C', dir, '--numeric-owner', '-c', '.'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const done = new Promise<void>((res, rej) =>
    child.once('exit', (code) =>
      code === 0 ? res() : rej(new Error(`tar of ${dir} failed (${code}): ${err}`)),
    ),
  );
  return { stream: child.stdout, done };
}

/** Waits for a Docker progress stream; rejects on an `error` message in it. */
function follow(docker: Docker, stream: NodeJS.ReadableStream, what: string): Promise<void> {
  return new Promise((res, rej) =>
    docker.modem.followProgress(stream, (err: Error | null, out: Array<{ error?: string }>) => {
      const bad = out?.find((o) => o.error);
      if (err || bad) rej(new Error(`${what} failed: ${err?.message ?? bad?.error}`));
      else res();
    }),
  );
}

async function importBase(
  docker: Docker,
  entries: Entry[],
  tag: string,
  python: string | null,
): Promise<void> {
  const stage = tempDir('clvimg');
  try {
    stageEntries(stage, entries);
    for (const d of ['tmp', 'proc', 'sys', 'dev', 'run', 'etc', 'usr/bin', 'usr/local/bin'])
      fs.mkdirSync(path.join(stage, d), { recursive: true });
    fs.chmodSync(path.join(stage, 'tmp'), 0o1777);
    fs.mkdirSync(path.join(stage, 'var'), { recursive: true });
    fs.symlinkSync('/run', path.join(stage, 'var', 'run'));
    if (python && !fs.existsSync(path.join(stage, path.dirname(python), 'python3')))
      fs.symlinkSync(path.basename(python), path.join(stage, path.dirname(python), 'python3'));
    fs.writeFileSync(
      path.join(stage, 'etc', 'passwd'),
      'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n',
    );
    fs.writeFileSync(path.join(stage, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
    const [repo, t] = tag.split(':');
    const { stream, done } = tarStream(stage);
    const progress = await docker.importImage(stream, { repo, tag: t });
    await Promise.all([follow(docker, progress, `docker import of ${tag}`), done]);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

async function buildProject(
  docker: Docker,
  entries: Entry[],
  baseTag: string,
  tag: string,
  python: string | null,
): Promise<void> {
  const stage = tempDir('clvimg');
  try {
    // The context holds the project under clove/ (its destination minus /opt/clove).
    stageEntries(
      path.join(stage, 'ctx'),
      entries.map((e) => ({ src: e.src, dest: `/clove${e.dest.slice(IMAGE_PROJECT_DIR.length)}` })),
    );
    const pyBin = python ? `${path.dirname(python)}:` : '';
    fs.writeFileSync(
      path.join(stage, 'ctx', 'Dockerfile'),
      [
        `FROM ${baseTag}`,
        `COPY clove ${IMAGE_PROJECT_DIR}`,
        `ENV PATH=${pyBin}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
        python ? `ENV CLOVE_PYTHON=${python}` : '',
        `WORKDIR ${IMAGE_PROJECT_DIR}`,
        '',
      ].join('\n'),
    );
    const { stream, done } = tarStream(path.join(stage, 'ctx'));
    const progress = await docker.buildImage(stream, {
      t: tag,
      rm: true,
      forcerm: true,
      labels: { [`${HARNESS_LABEL}.image`]: '1' },
    });
    await Promise.all([follow(docker, progress, `docker build of ${tag}`), done]);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}
