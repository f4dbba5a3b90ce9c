/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`, e.g. a bench run with `--cpu-prof <dir>`): the
 * functions with the most self time, and the share of idle, GC and program time.
 *
 *   node dist/bench/profile-summary.js <file.cpuprofile> [top=25]
 */
import fs from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: profile-summary.js <file.cpuprofile> [top]');
  process.exit(2);
}
const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
for (let i = 0; i < p.samples.length; i++)
  self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
const agg = new Map<string, number>();
let total = 0;
for (const [id, us] of self) {
  const n = byId.get(id)!;
  const f = n.callFrame;
  const where = f.url
    ? `${f.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}`
    : '';
  const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
  agg.set(key, (agg.get(key) ?? 0) + us);
  total += us;
}
const top = [...agg].sort((a, b) => b[1] - a[1]).slice(0, Number(topArg ?? 25));
const idle = agg.get('(idle)') ?? 0;
console.log(
  `${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(((total - idle) / total) * 100).toFixed(1)} % busy`,
);
console.log('self ms   % busy  function');
for (const [k, us] of top) {
  if (k === '(idle)') continue;
  console.log(
    `${(us / 1000).toFixed(1).padStart(8)}  ${((us / (total - idle)) * 100).toFixed(1).padStart(5)}  ${k}`,
  );
}
