/**
 * The tiny shell-word splitter of EXEC's `command` when the caller may not use a shell: POSIX quoting
 * (single quotes, double quotes, backslash) and nothing else. No expansion of any kind, no pipes,
 * redirections, lists, subshells, globs, assignments or comments: a command that needs one of those
 * needs a shell, and the splitter says which character made it so (the family refuses it then). It
 * never guesses: `ls x; rm y` is not `ls` with arguments, it is refused.
 */

export type Split = { words: string[] } | { needsShell: string };

/** Unquoted, these make a command a shell command. */
const OPERATORS = new Set(['|', '&', ';', '<', '>', '(', ')', '\n', '\r']);
/** Unquoted, these would be expanded by a shell (parameters, commands, globs). */
const EXPANSIONS = new Set(['$', '`', '*', '?', '[']);
/** Inside double quotes a shell still expands these. */
const DQ_EXPANSIONS = new Set(['$', '`']);
const BLANK = /[ \t]/;

function describe(ch: string): string {
  return ch === '\n' || ch === '\r' ? 'a newline' : `\`${ch}\``;
}

export function splitWords(command: string): Split {
  const words: string[] = [];
  let word = '';
  /** The current word exists (it may be empty: `''`). */
  let inWord = false;
  /** Some part of the current word was quoted (an assignment or a `~`/`#` there is literal). */
  let quoted = false;
  for (let i = 0; i < command.length; i++) {
    const ch = command[i];
    if (BLANK.test(ch)) {
      if (inWord) words.push(word);
      word = '';
      inWord = quoted = false;
      continue;
    }
    if (ch === "'") {
      const end = command.indexOf("'", i + 1);
      if (end < 0) return { needsShell: "an unterminated `'`" };
      word += command.slice(i + 1, end);
      i = end;
      inWord = quoted = true;
      continue;
    }
    if (ch === '"') {
      let j = i + 1;
      for (; j < command.length && command[j] !== '"'; j++) {
        const c = command[j];
        if (c === '\\' && j + 1 < command.length && '"\\$`\n'.includes(command[j + 1])) {
          if (command[j + 1] !== '\n') word += command[j + 1]; // backslash-newline: a continuation
          j++;
          continue;
        }
        if (DQ_EXPANSIONS.has(c)) return { needsShell: `${describe(c)} inside double quotes` };
        word += c;
      }
      if (j >= command.length) return { needsShell: 'an unterminated `"`' };
      i = j;
      inWord = quoted = true;
      continue;
    }
    if (ch === '\\') {
      if (i + 1 >= command.length) return { needsShell: 'a trailing `\\`' };
      const next = command[++i];
      if (next !== '\n') {
        word += next;
        inWord = quoted = true;
      }
      continue;
    }
    if (OPERATORS.has(ch) || EXPANSIONS.has(ch)) return { needsShell: describe(ch) };
    // At the start of a word: a comment, a tilde expansion.
    if (!inWord && (ch === '#' || ch === '~')) return { needsShell: describe(ch) };
    // An assignment before the command (`A=1 cmd`) or of the first word.
    if (ch === '=' && words.length === 0 && !quoted && /^[A-Za-z_][A-Za-z0-9_]*$/.test(word))
      return { needsShell: 'a variable assignment' };
    word += ch;
    inWord = true;
  }
  if (inWord) words.push(word);
  return { words };
}
