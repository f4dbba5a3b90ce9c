/**
 * EXEC's policy (docs/protocol.md §5 "Exec"): which program a request runs, through a shell or not, in
 * which directory, and whether the caller's rights allow it. Programs are matched by what they ARE — the
 * real path, in the agent's own view, of the file that would be executed — never by substrings of the
 * command text (reference §5 #6).
 *
 * - An agent confined like its own process (its namespaces, or a uid of its own) may EXEC by default:
 *   the command has exactly the agent's own powers, so refusing it would protect nothing. An `exec`
 *   allow list, when it has entries, restricts what it may run (the shell included).
 * - Anywhere else — an operator, an agent that runs as the kernel's uid — EXEC needs `can_exec` and an
 *   allow list that names the program (`*`: anything), as in the public kernel.
 * - `blocked_commands` refuses programs (by real path, or by name), in every case. `*` refuses EXEC.
 */
import path from 'node:path';
import {
  exec as sandbox,
  InvalidRequestError,
  NotFoundError,
  PermissionDeniedError,
  type Permissions,
} from '../../core/family.js';
import { firstMatch } from '../../core/family.js';
import { splitWords } from './words.js';

type ExecSite = sandbox.ExecSite;
type FoundPath = sandbox.FoundPath;

export const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin';
/** The shell `command` runs with, when the caller's rights allow one. */
export const SHELL = '/bin/sh';

/** What a request turns into: the program (its real path in the site's view) and its argv. */
export interface Program {
  file: string;
  argv: string[];
  /** `command` runs as `/bin/sh -c command`. */
  shell: boolean;
}

const FILLER = { stdout: '', stderr: '', exit_code: -1 };

const denied = (why: string) => new PermissionDeniedError(`Permission denied: ${why}`, FILLER);

/** A word as execvp would find it: a path (relative to `cwd`) or a name looked up in `searchPath`. */
function locate(site: ExecSite, word: string, searchPath: string, cwd: string): FoundPath {
  if (word === '') throw new InvalidRequestError('invalid request: empty program name', FILLER);
  if (!word.includes('/')) {
    const f = site.which(word, searchPath);
    if (!f) throw new NotFoundError(`program not found: ${word} (looked up in PATH=${searchPath})`, FILLER);
    return f;
  }
  const abs = path.posix.resolve(cwd, word);
  const [l] = site.find([abs]);
  if (!sandbox.isFound(l)) {
    if (l.code === 'EACCES')
      throw denied(`${word}: a directory on its path is not searchable by the agent's uid`);
    throw new NotFoundError(`program not found: ${word}`, FILLER);
  }
  if (l.type !== 'file')
    throw new InvalidRequestError(`invalid request: ${word} is not a regular file`, FILLER);
  if (!site.mayExecute(l)) throw denied(`${word} is not executable by the agent's uid`);
  return l;
}

/** Where an allow/block entry's program is, or null when it names none (not found, or not a program). */
function entryProgram(
  site: ExecSite,
  name: string,
  searchPath: string,
  memo?: Map<string, string | null>,
): string | null {
  const known = memo?.get(name);
  if (known !== undefined) return known;
  let found: string | null = null;
  if (!name.includes('/')) found = site.which(name, searchPath)?.path ?? null;
  else if (path.isAbsolute(name)) {
    const [l] = site.find([path.posix.normalize(name)]);
    found = sandbox.isFound(l) && l.type === 'file' ? l.path : null;
  }
  memo?.set(name, found);
  return found;
}

/**
 * Whether an `exec` or `blocked_commands` entry matches a program run with `argv`. An entry is words
 * (split like a command without shell: an entry that needs a shell matches nothing): its first word is
 * a program — a name, found in the command's PATH in the agent's view, or an absolute path — compared by
 * real path; the words after it must be the first arguments, exactly. `*` matches everything. Blocked
 * names also match by name (a copy of `sudo` under /tmp is still `sudo`).
 */
export function entryMatches(
  entry: string,
  program: { file: string; argv: string[] },
  site: ExecSite,
  searchPath: string,
  kind: 'allow' | 'blocked',
  memo?: Map<string, string | null>,
): boolean {
  if (entry.trim() === '*') return true;
  const s = splitWords(entry);
  if ('needsShell' in s || s.words.length === 0) return false;
  const [name, ...args] = s.words;
  let same = entryProgram(site, name, searchPath, memo) === program.file;
  if (!same && kind === 'blocked' && !name.includes('/'))
    same = path.posix.basename(program.file) === name || path.posix.basename(program.argv[0] ?? '') === name;
  if (!same) return false;
  return args.every((a, i) => program.argv[i + 1] === a);
}

export interface ProgramRequest {
  command?: string;
  argv?: string[];
}

/**
 * The program a request runs, checked against the caller's rights. `paths.command` is the command's own
 * PATH (the request may change it), `paths.entries` the agent's, where allow and block entries are found.
 */
export function decideProgram(
  perms: Permissions,
  site: ExecSite,
  req: ProgramRequest,
  paths: { command: string; entries: string },
  cwd: string,
): Program {
  const searchPath = paths.command;
  const listed = perms.exec.length > 0;
  if (!site.confined) {
    if (!perms.can_exec)
      throw denied(
        site.uid < 0
          ? "EXEC would run with the kernel's uid, outside any sandbox: it needs `can_exec` and an `exec` allow list"
          : 'EXEC needs `can_exec` and an `exec` allow list here',
      );
    if (!listed) throw denied('command not allowed: the `exec` allow list is empty');
  }
  if (perms.blocked_commands.some((b) => b.trim() === '*'))
    throw denied('EXEC is blocked (`blocked_commands: ["*"]`)');
  // Entries are found in the agent's own PATH (the kernel sets it; SPAWN's env cannot): never in one
  // the request chose, or `ls` could name the agent's own /tmp/ls.
  // Every entry's program, found in one walk of the agent's view.
  const memo = new Map<string, string | null>();
  const names = new Set<string>();
  for (const e of [...(listed ? perms.exec : []), ...perms.blocked_commands]) {
    const w = splitWords(e);
    if (!('needsShell' in w) && w.words.length && !w.words[0].includes('/')) names.add(w.words[0]);
  }
  for (const [n, f] of site.whichMany([...names], paths.entries)) memo.set(n, f?.path ?? null);
  const allowed = (p: { file: string; argv: string[] }) =>
    !listed || perms.exec.some((e) => entryMatches(e, p, site, paths.entries, 'allow', memo));
  const blockedBy = (p: { file: string; argv: string[] }) =>
    perms.blocked_commands.find((e) => entryMatches(e, p, site, paths.entries, 'blocked', memo));

  let program: Program;
  if (req.argv !== undefined) {
    if (req.command !== undefined)
      throw new InvalidRequestError('invalid request: give `command` or `argv`, not both', FILLER);
    program = { file: locate(site, req.argv[0], searchPath, cwd).path, argv: [...req.argv], shell: false };
  } else {
    const command = req.command ?? '';
    if (command.trim() === '') throw new InvalidRequestError('command required', FILLER);
    const shellFound = site.find([SHELL])[0];
    const shell = sandbox.isFound(shellFound) && shellFound.type === 'file' ? shellFound : undefined;
    const viaShell = shell && { file: shell.path, argv: ['sh', '-c', command] };
    if (viaShell && allowed(viaShell) && !blockedBy(viaShell)) {
      program = { ...viaShell, shell: true };
    } else {
      const s = splitWords(command);
      if ('needsShell' in s)
        throw denied(
          `this command needs a shell (it has ${s.needsShell}) and your rights do not allow one ` +
            `(${SHELL} is not in your \`exec\` allow list, or is blocked): pass \`argv\` instead`,
        );
      if (s.words.length === 0) throw new InvalidRequestError('command required', FILLER);
      program = { file: locate(site, s.words[0], searchPath, cwd).path, argv: s.words, shell: false };
    }
  }
  if (!allowed(program))
    throw denied(`command not allowed: ${program.file} is not in your \`exec\` allow list`);
  const b = blockedBy(program);
  if (b !== undefined)
    throw denied(`command blocked: ${program.file} (blocked_commands: ${JSON.stringify(b)})`);
  return program;
}

/**
 * The working directory: `requested` (relative to `base`, the agent's own) must exist in the site's
 * view, be a directory, and pass the caller's `filesystem` read rules exactly as a READ of it would
 * (by the name given and by its real path); `base` itself needs no check. Returns its real path.
 */
export function decideCwd(
  perms: Permissions,
  site: ExecSite,
  requested: string | undefined,
  base: string,
  homes: string[],
): string {
  const named = requested === undefined ? base : path.posix.resolve(base, requested);
  if (named.length > 4096) throw new InvalidRequestError('invalid request: cwd too long', FILLER);
  const [l] = site.find([named]);
  if (!sandbox.isFound(l)) {
    if (l.code === 'EACCES')
      throw denied(`cwd ${named}: a directory on its path is not searchable by the agent's uid`);
    throw new NotFoundError(`cwd not found: ${named}`, FILLER);
  }
  if (l.type !== 'dir')
    throw new InvalidRequestError(`invalid request: cwd is not a directory: ${named}`, FILLER);
  if (requested !== undefined) {
    if (!perms.can_read) throw denied('cwd: reading files is not allowed');
    for (const p of new Set([named, l.path])) {
      const blocked = firstMatch(perms.filesystem.blocked, p, homes, 'blocked');
      if (blocked !== undefined) throw denied(`cwd not allowed: ${p} (blocked: ${blocked})`);
      const allow = perms.filesystem.read;
      if (allow.length && firstMatch(allow, p, homes.slice(0, 1), 'allow') === undefined)
        throw denied(`cwd not allowed: ${p} is not in your filesystem.read list`);
    }
  }
  return l.path;
}
