/**
 * An asciicast v2 recorder (https://docs.asciinema.org/manual/asciicast/v2/): a JSON header line, then
 * one `[seconds, "o", data]` line per output chunk. Frames are written as "clear screen + frame", which
 * every player (and svg-term) replays faithfully.
 */
import fs from 'node:fs';
import path from 'node:path';

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[A-Za-z]/g;

/** Columns and rows `text` takes on a terminal. */
function extent(text: string): { cols: number; rows: number } {
  const lines = text.split('\n');
  return { cols: Math.max(...lines.map((l) => [...l.replace(ANSI, '')].length)), rows: lines.length };
}

export class CastRecorder {
  private readonly t0 = Date.now();
  private readonly events: string[] = [];
  private last = '';
  private lastAt = -Infinity;
  /** The terminal size is fitted to what was recorded (at least minWidth × minHeight). */
  private cols: number;
  private rows: number;
  private screenRows = 0;

  constructor(
    minWidth = 80,
    minHeight = 24,
    private readonly title = 'clove chaos',
    /** Frames closer together than this are dropped (forced ones are always kept). */
    private readonly minGapMs = 200,
  ) {
    this.cols = minWidth;
    this.rows = minHeight;
  }

  private out(data: string): void {
    this.events.push(JSON.stringify([Math.round(Date.now() - this.t0) / 1000, 'o', data]));
  }

  /** A full-screen frame (lines joined by "\n"). Unchanged and too-frequent frames are skipped. */
  frame(text: string, force = false): void {
    if (text === this.last) return;
    if (!force && Date.now() - this.lastAt < this.minGapMs) return;
    this.last = text;
    this.lastAt = Date.now();
    const e = extent(text);
    this.cols = Math.max(this.cols, e.cols);
    this.screenRows = e.rows;
    this.rows = Math.max(this.rows, this.screenRows);
    this.out(`\u001b[H\u001b[2J${text.replace(/\n/g, '\r\n')}`);
  }

  /** Text appended below the last frame. */
  print(text: string): void {
    const e = extent(text);
    this.cols = Math.max(this.cols, e.cols);
    this.screenRows += e.rows + 1;
    this.rows = Math.max(this.rows, this.screenRows + 1);
    this.out(`\r\n${text.replace(/\n/g, '\r\n')}\r\n`);
  }

  toString(): string {
    const header = {
      version: 2,
      width: this.cols + 1,
      height: this.rows,
      timestamp: Math.floor(this.t0 / 1000),
      title: this.title,
      env: { TERM: 'xterm-256color', SHELL: '/bin/bash' },
    };
    return [JSON.stringify(header), ...this.events].join('\n') + '\n';
  }

  save(file: string): void {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    fs.writeFileSync(file, this.toString());
  }
}

/** Renders an asciicast to an animated SVG with svg-term. */
export async function castToSvg(cast: string, file: string): Promise<void> {
  const { render } = (await import('svg-term')) as {
    render: (raw: string, o?: Record<string, unknown>) => string;
  };
  const svg = render(cast, { window: true, paddingX: 8, paddingY: 8 });
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, svg);
}
