/** The shell-word splitter used when `command` may not go through a shell. */
import { describe, expect, it } from 'vitest';
import { splitWords } from './words.js';

describe('splitWords', () => {
  it.each([
    ['ls -la /tmp', ['ls', '-la', '/tmp']],
    ['  echo   a\tb  ', ['echo', 'a', 'b']],
    [`echo 'a b' "c d" e\\ f`, ['echo', 'a b', 'c d', 'e f']],
    [`echo '$HOME' "\\$x" \\; '*' "|"`, ['echo', '$HOME', '$x', ';', '*', '|']],
    [`printf "%s" ''`, ['printf', '%s', '']],
    [`a"b"'c'd`, ['abcd']],
    [`echo a=b x~y 'A=1'`, ['echo', 'a=b', 'x~y', 'A=1']],
    ['', []],
  ])('%s', (command, words) => {
    expect(splitWords(command)).toEqual({ words });
  });

  it.each([
    ['ls; touch /tmp/pwned', '`;`'],
    ['x; rm -rf /; ls', '`;`'],
    ['ls | sh', '`|`'],
    ['ls && id', '`&`'],
    ['ls > f', '`>`'],
    ['cat < f', '`<`'],
    ['(ls)', '`(`'],
    ['ls $(id)', '`$`'],
    ['ls `id`', '`` ` ``'],
    ['echo "$(id)"', 'inside double quotes'],
    ['ls *.py', '`*`'],
    ['ls ?', '`?`'],
    ['ls [ab]', '`[`'],
    ['ls ~', '`~`'],
    ['ls # c', '`#`'],
    ['A=1 ls', 'assignment'],
    ['ls\nid', 'newline'],
    ["echo 'open", 'unterminated'],
    ['echo "open', 'unterminated'],
    ['echo \\', 'trailing'],
  ])('%s needs a shell', (command, why) => {
    const r = splitWords(command);
    expect('needsShell' in r && r.needsShell).toContain(why.replace(/^`` ` ``$/, '`'));
  });
});
