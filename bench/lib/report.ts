/**
 * Report writing: `reports/<name>.json` (machine-readable, with the machine block), `reports/<name>.md`
 * (tables), and SVG charts rendered headlessly with Vega-Lite → Vega (`view.toSVG()`).
 */
import { parseArgs } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { REPO_ROOT } from '../../kernel/config.js';
import type { MachineInfo } from './machine.js';
import { r } from './stats.js';

export const REPORTS_DIR = process.env.CLOVE_REPORTS_DIR ?? path.join(REPO_ROOT, 'reports');

export function writeJson(name: string, data: unknown): string {
  fs.mkdirSync(REPORTS_DIR, { recursive: true });
  const f = path.join(REPORTS_DIR, `${name}.json`);
  fs.writeFileSync(f, JSON.stringify(data, null, 2) + '\n');
  return f;
}

export function writeText(file: string, text: string): string {
  fs.mkdirSync(REPORTS_DIR, { recursive: true });
  const f = path.join(REPORTS_DIR, file);
  fs.writeFileSync(f, text.endsWith('\n') ? text : text + '\n');
  return f;
}

/** Renders a Vega-Lite spec to an SVG file in reports/ and returns its file name. */
export async function writeChart(file: string, spec: vl.TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  writeText(file, svg);
  return file;
}

/** Overlaid latency histograms (one colour per series), log-scaled x when the spread is wide. */
export function histogramSpec(
  title: string,
  series: { name: string; values: number[] }[],
  unit = 'ms',
  maxbins = 60,
): vl.TopLevelSpec {
  const values = series.flatMap((s) => s.values.map((v) => ({ series: s.name, v })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 640,
    height: 260,
    background: 'white',
    data: { values },
    mark: { type: 'bar', opacity: 0.6, binSpacing: 0 },
    encoding: {
      x: { field: 'v', type: 'quantitative', bin: { maxbins }, title: `latency (${unit})` },
      y: { aggregate: 'count', type: 'quantitative', title: 'samples', stack: null },
      color: { field: 'series', type: 'nominal', title: null, legend: { orient: 'top-right' } },
    },
  };
}

/** One small histogram per series (independent x scales), stacked vertically. */
export function facetHistogramSpec(
  title: string,
  series: { name: string; values: number[] }[],
  unit = 'ms',
  maxbins = 40,
): vl.TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    background: 'white',
    vconcat: series.map((s) => ({
      width: 560,
      height: 110,
      title: { text: s.name, fontSize: 11, anchor: 'start' },
      data: { values: s.values.map((v) => ({ v })) },
      mark: { type: 'bar', binSpacing: 0 },
      encoding: {
        x: { field: 'v', type: 'quantitative', bin: { maxbins }, title: `latency (${unit})` },
        y: { aggregate: 'count', type: 'quantitative', title: 'samples' },
      },
    })),
  };
}

/** A horizontal bar chart of one number per label (e.g. p50 / p95 per series). */
export function barSpec(
  title: string,
  rows: { label: string; stat: string; value: number }[],
  unit: string,
): vl.TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    background: 'white',
    width: 520,
    data: { values: rows },
    mark: 'bar',
    encoding: {
      y: { field: 'label', type: 'nominal', title: null, sort: null },
      yOffset: { field: 'stat' },
      x: { field: 'value', type: 'quantitative', title: unit },
      color: { field: 'stat', type: 'nominal', title: null },
    },
  };
}

/** A line chart with points: y against x, one line per series. */
export function lineSpec(
  title: string,
  rows: { x: number; y: number; series: string }[],
  xTitle: string,
  yTitle: string,
): vl.TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 560,
    height: 300,
    background: 'white',
    data: { values: rows },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'x', type: 'quantitative', title: xTitle },
      y: { field: 'y', type: 'quantitative', title: yTitle, scale: { zero: true } },
      color: { field: 'series', type: 'nominal', title: null },
    },
  };
}

/** A Markdown table. */
export function mdTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map(String).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export interface ReportEnvelope<T> {
  bench: string;
  command: string;
  quick: boolean;
  machine: MachineInfo;
  loadavg_at_end: number[];
  duration_s: number;
  results: T;
}

/**
 * The envelope every bench report shares: what ran (`node dist/bench/<bench>.js` plus `extraArgs`), on
 * which machine, the load at the end and how long it took since `startedAt`.
 */
export function envelope<T>(
  bench: string,
  o: { quick: boolean; machine: MachineInfo; startedAt: number; results: T; extraArgs?: string },
): ReportEnvelope<T> {
  return {
    bench,
    command: `npm run build && node dist/bench/${bench}.js${o.quick ? ' --quick' : ''}${o.extraArgs ?? ''}`,
    quick: o.quick,
    machine: o.machine,
    loadavg_at_end: os.loadavg().map((x) => r(x)),
    duration_s: Math.round((Date.now() - o.startedAt) / 1000),
    results: o.results,
  };
}

/**
 * The flags a report's "Reproduce" line must repeat (`--agents=10000`, `--configs=…`): every `--name=value`
 * of `names` that was given, in that order (the `=` form: a value may itself start with `--`).
 */
export function givenFlags(flags: { get(name: string): string | undefined }, names: string[]): string {
  return names
    .map((n) => [n, flags.get(n)] as const)
    .filter(([, v]) => v !== undefined)
    .map(([n, v]) => ` --${n}=${v}`)
    .join('');
}

/** A bench's command-line flags: `--quick` (or BENCH_QUICK=1) and the values it names. */
export interface BenchFlags {
  quick: boolean;
  /** The value of `--name value` / `--name=value`; `name` must be one the bench declared. */
  get(name: string): string | undefined;
}

/**
 * Parses a bench's flags with node:util parseArgs: `--quick`, and `names` as options that take a value.
 * An unknown flag, a positional argument or a flag without its value exits 2 naming it and the flags the
 * bench takes (a typo must not silently run the default bench).
 */
export function parseFlags(names: readonly string[], argv = process.argv.slice(2)): BenchFlags {
  const options: Record<string, { type: 'string' } | { type: 'boolean' }> = { quick: { type: 'boolean' } };
  for (const n of names) options[n] = { type: 'string' };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (e) {
    const flags = ['--quick', ...names.map((n) => `--${n} V`)].join(' ');
    process.stderr.write(
      `${path.basename(process.argv[1] ?? 'bench')}: ${(e as Error).message}\nflags: ${flags}\n`,
    );
    process.exit(2);
  }
  return {
    quick: values.quick === true || process.env.BENCH_QUICK === '1',
    get(name) {
      if (!names.includes(name)) throw new Error(`bench flag --${name} was not declared`);
      const v = values[name];
      return typeof v === 'string' ? v : undefined;
    },
  };
}
