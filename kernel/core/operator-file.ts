/**
 * An operator's JSON file the kernel trusts with secrets (llm.json's API keys, mcp.json's commands and
 * headers): whoever can write it can make the kernel send a key to their server or run their command, so
 * it must be a regular file owned by the kernel's uid with no access for group or others. Read once.
 */
import fs from 'node:fs';

export type OperatorFile =
  { kind: 'absent' } | { kind: 'refused'; error: string } | { kind: 'json'; json: unknown };

/**
 * Reads `file` as JSON after checking the opened file (what is checked is what is read: a symlink's target,
 * never the path again). `required`: a missing file is refused rather than absent. `what` names the file
 * in the reasons ("LLM providers file").
 */
export function readOperatorJson(file: string, what: string, required: boolean, uid: number): OperatorFile {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO at the path must not hang the kernel's start (it is refused below).
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    if (!required && (e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    return { kind: 'refused', error: `${what} ${file} cannot be read: ${(e as Error).message}` };
  }
  const refused = (why: string): OperatorFile => ({
    kind: 'refused',
    error: `${what} ${file} is not used: ${why}`,
  });
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return refused('not a regular file');
    if (st.uid !== uid) return refused(`owned by uid ${st.uid}, not the kernel's (${uid})`);
    if (st.mode & 0o077)
      return refused(
        `mode ${(st.mode & 0o777).toString(8)}: group and others must have no access (chmod 600)`,
      );
    try {
      return { kind: 'json', json: JSON.parse(fs.readFileSync(fd, 'utf8')) };
    } catch (e) {
      return refused(`not JSON: ${(e as Error).message}`);
    }
  } finally {
    fs.closeSync(fd);
  }
}
