/**
 * <clove-chart>: one uPlot line chart over the sampler's ring. uPlot draws on a canvas and is handed
 * new columns on every metrics message (setData), so a chart costs no DOM work per sample.
 */
import { LitElement, html } from 'lit';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface SeriesSpec {
  label: string;
  color: string;
}

export class CloveChart extends LitElement {
  static override properties = {
    heading: { type: String },
  };
  heading = '';
  series: SeriesSpec[] = [];
  /** Formats the y axis and the legend values. */
  unit: (v: number) => string = (v) => String(Math.round(v * 100) / 100);
  private plot: uPlot | null = null;
  private resize: ResizeObserver | null = null;
  private pending: uPlot.AlignedData | null = null;

  // Light DOM: uPlot's stylesheet is global.
  protected override createRenderRoot(): HTMLElement {
    return this;
  }

  override render() {
    return html`<h3>${this.heading}</h3>
      <div class="plot"></div>`;
  }

  protected override firstUpdated(): void {
    const host = this.querySelector<HTMLDivElement>('.plot')!;
    const fmt = this.unit;
    const opts: uPlot.Options = {
      width: Math.max(200, host.clientWidth),
      height: 160,
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true },
        y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max) * 1.1] },
      },
      axes: [
        {
          stroke: '#8a94a6',
          grid: { stroke: '#2a3140' },
          ticks: { stroke: '#2a3140' },
          // Whole seconds and up, as wall-clock times (the samples are a second apart).
          incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600],
          space: 60,
          values: (_u, vals) => vals.map((v) => new Date(v * 1000).toLocaleTimeString([], { hour12: false })),
        },
        {
          stroke: '#8a94a6',
          grid: { stroke: '#2a3140' },
          ticks: { stroke: '#2a3140' },
          size: 76,
          values: (_u, vals) => vals.map((v) => fmt(v)),
        },
      ],
      series: [
        {},
        ...this.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 1.5,
          points: { show: false },
          value: (_u: uPlot, v: number | null) => (v === null ? '—' : fmt(v)),
        })),
      ],
    };
    const empty: uPlot.AlignedData = [[], ...this.series.map(() => [])];
    this.plot = new uPlot(opts, this.pending ?? empty, host);
    this.pending = null;
    this.resize = new ResizeObserver(() => {
      if (this.plot && host.clientWidth > 0) this.plot.setSize({ width: host.clientWidth, height: 160 });
    });
    this.resize.observe(host);
  }

  setData(columns: (number | null)[][]): void {
    const data = columns as unknown as uPlot.AlignedData;
    if (this.plot) this.plot.setData(data);
    else this.pending = data;
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.resize?.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }
}

customElements.define('clove-chart', CloveChart);
