/**
 * <clove-dashboard>: the whole page. It asks for a token when it has none (or the API refuses it),
 * finds out whether a kernel or a relay serves it (GET api/v1/machines answers 200 only on a relay),
 * loads the agents, events and services over REST, then lives off the WebSocket stream: a metrics
 * message a second replaces the grid and feeds the charts, each event is prepended to the event panel.
 */
import { LitElement, html, nothing, type TemplateResult } from 'lit';
import { repeat } from 'lit/directives/repeat.js';
import {
  Api,
  ApiError,
  Stream,
  probeFleet,
  type AgentRow,
  type KernelEvent,
  type Machine,
  type ServiceRow,
  type StreamMessage,
  type StreamStatus,
  type SystemInfo,
} from './api.js';
import { Sampler, type Sample } from './series.js';
import { bytes, clock, eventSummary, percent, stateClass, worstQuota } from './format.js';
import { forgetToken, loadToken, saveToken } from './token.js';
import type { CloveChart, SeriesSpec } from './chart.js';

type Phase = 'auth' | 'loading' | 'ready';
type Verb = 'kill' | 'restart' | 'pause' | 'resume';

const MAX_EVENTS = 200;
/** Rows the grid draws at most (a kernel may run thousands of agents; the filter narrows them). */
const MAX_ROWS = 300;
const LOG_TAIL = 200;
const MACHINE_KEY = 'clove.machine';

interface ChartDef {
  id: string;
  heading: string;
  keys: (keyof Sample)[];
  series: SeriesSpec[];
  unit?: (v: number) => string;
}

const CHARTS: ChartDef[] = [
  {
    id: 'states',
    heading: 'Agents by state',
    keys: ['running', 'restarting', 'paused', 'stopped'],
    series: [
      { label: 'running', color: '#3ecf8e' },
      { label: 'restarting', color: '#f5a524' },
      { label: 'paused', color: '#7aa2f7' },
      { label: 'stopped', color: '#f7768e' },
    ],
    unit: (v) => String(Math.round(v)),
  },
  {
    id: 'messages',
    heading: 'Messages / s',
    keys: ['msgsIn', 'msgsOut'],
    series: [
      { label: 'in', color: '#7dcfff' },
      { label: 'out', color: '#bb9af7' },
    ],
    unit: (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1)),
  },
  {
    id: 'cpu',
    heading: 'CPU',
    keys: ['cpuSystem', 'cpuAgents'],
    series: [
      { label: 'machine', color: '#8a94a6' },
      { label: 'all agents', color: '#3ecf8e' },
    ],
    unit: (v) => `${v.toFixed(0)}%`,
  },
  {
    id: 'memory',
    heading: "Agents' memory",
    keys: ['memAgents'],
    series: [{ label: 'all agents', color: '#e0af68' }],
    unit: (v) => bytes(v),
  },
];

/** Whether an agent matches the grid's filter (name, state, node, a label's key or value). */
function matches(a: AgentRow, needle: string): boolean {
  const hay = [a.name, a.state, a.node ?? '', String(a.id), ...Object.entries(a.labels ?? {}).flat()];
  return hay.some((h) => h.toLowerCase().includes(needle));
}

export class CloveDashboard extends LitElement {
  static override properties = {
    phase: { state: true },
    authError: { state: true },
    fleet: { state: true },
    machine: { state: true },
    agents: { state: true },
    events: { state: true },
    services: { state: true },
    system: { state: true },
    status: { state: true },
    selected: { state: true },
    logs: { state: true },
    logsError: { state: true },
    notice: { state: true },
    armedKill: { state: true },
    busy: { state: true },
    loadError: { state: true },
    filter: { state: true },
  };

  phase: Phase = 'loading';
  authError = '';
  fleet: Machine[] | null = null;
  machine: string | null = null;
  agents: AgentRow[] = [];
  events: KernelEvent[] = [];
  services: ServiceRow[] = [];
  system: SystemInfo | null = null;
  status: StreamStatus = 'closed';
  selected: number | null = null;
  logs: string[] = [];
  logsError = '';
  notice: { text: string; kind: 'ok' | 'error' } | null = null;
  loadError = '';
  filter = '';
  armedKill: number | null = null;
  busy = new Set<string>();

  private token: string | null = null;
  private api: Api | null = null;
  private stream: Stream | null = null;
  private sampler = new Sampler();
  private timers: ReturnType<typeof setInterval>[] = [];
  private generation = 0;
  private noticeTimer: ReturnType<typeof setTimeout> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private armTimer: ReturnType<typeof setTimeout> | null = null;

  protected override createRenderRoot(): HTMLElement {
    return this;
  }

  override connectedCallback(): void {
    super.connectedCallback();
    this.token = loadToken();
    if (this.token) void this.start();
    else this.phase = 'auth';
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.stopLive();
  }

  // ── lifecycle of a session ──────────────────────────────────────────────────────────────

  /** Decides kernel or fleet mode with the token, then opens the chosen kernel. */
  private async start(): Promise<void> {
    this.phase = 'loading';
    this.authError = '';
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    let machines: Machine[] | null;
    try {
      machines = await probeFleet(this.token!);
    } catch (e) {
      if (e instanceof ApiError && e.unauthorized) return this.toAuth('The token was refused.');
      if (e instanceof ApiError && e.status === 403)
        return this.toAuth(`The token may not use this API: ${e.message}`);
      // Unreachable (the kernel restarting, the network): keep the token and try again.
      this.loadError = `Cannot reach the API (${(e as Error).message}); trying again…`;
      this.retryTimer = setTimeout(() => void this.start(), 3000);
      return;
    }
    this.loadError = '';
    this.fleet = machines;
    if (machines) {
      let saved: string | null = null;
      try {
        saved = sessionStorage.getItem(MACHINE_KEY);
      } catch {
        saved = null;
      }
      const pick =
        machines.find((m) => m.id === saved) ?? machines.find((m) => m.connected) ?? machines[0] ?? null;
      await this.openMachine(pick?.id ?? null);
    } else {
      await this.openBase('api/v1');
    }
  }

  private async openMachine(id: string | null): Promise<void> {
    this.machine = id;
    if (id) {
      try {
        sessionStorage.setItem(MACHINE_KEY, id);
      } catch {
        // not kept
      }
    }
    if (!id) {
      this.stopLive();
      this.phase = 'ready';
      this.startFleetRefresh();
      return;
    }
    await this.openBase(`api/v1/machines/${encodeURIComponent(id)}`);
  }

  /** Loads one kernel's state over REST and subscribes to its stream. */
  private async openBase(base: string): Promise<void> {
    this.stopLive();
    const gen = ++this.generation;
    const api = new Api(base, this.token!);
    this.api = api;
    this.sampler.reset();
    this.agents = [];
    this.events = [];
    this.services = [];
    this.system = null;
    this.selected = null;
    this.logs = [];
    try {
      this.agents = await api.agents();
    } catch (e) {
      if (gen !== this.generation) return;
      if (e instanceof ApiError && e.unauthorized) return this.toAuth('The token was refused.');
      this.flash(`Cannot list agents: ${(e as Error).message}`, 'error');
    }
    if (gen !== this.generation) return;
    this.phase = 'ready';
    void api.events(100).then(
      (evs) => gen === this.generation && this.mergeEvents(evs),
      () => undefined,
    );
    void this.refreshServices();
    this.stream = new Stream(
      api,
      this.token!,
      (m) => gen === this.generation && this.onStream(m),
      (s) => gen === this.generation && this.onStatus(s),
    );
    this.stream.start();
    this.timers.push(setInterval(() => void this.refreshServices(), 5000));
    this.timers.push(setInterval(() => void this.refreshLogs(), 2000));
    this.startFleetRefresh();
  }

  private startFleetRefresh(): void {
    if (!this.fleet) return;
    this.timers.push(
      setInterval(async () => {
        try {
          const m = await probeFleet(this.token!);
          if (!m) return;
          this.fleet = m;
          // The first machine to connect to an empty relay is opened without a click.
          const first = m.find((x) => x.connected);
          if (!this.machine && first) void this.openMachine(first.id);
        } catch (e) {
          if (e instanceof ApiError && e.unauthorized) this.toAuth('The token was refused.');
        }
      }, 5000),
    );
  }

  private stopLive(): void {
    this.generation++;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.stream?.stop();
    this.stream = null;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  private toAuth(message: string): void {
    this.stopLive();
    forgetToken();
    this.token = null;
    this.authError = message;
    this.phase = 'auth';
  }

  private onSubmitToken(e: Event): void {
    e.preventDefault();
    const input = this.querySelector<HTMLInputElement>('[data-testid="token-input"]');
    const token = input?.value.trim() ?? '';
    if (!token) {
      this.authError = 'Enter the token from <data-dir>/http-token.';
      return;
    }
    this.token = token;
    saveToken(token);
    void this.start();
  }

  private signOut(): void {
    this.toAuth('');
  }

  // ── live data ───────────────────────────────────────────────────────────────────────────

  private onStream(m: StreamMessage): void {
    if (m.type === 'metrics') {
      this.agents = m.agents ?? [];
      if (m.system) this.system = m.system;
      this.sampler.add(m.ts ?? Date.now(), this.agents, m.system);
      this.drawCharts();
    } else if (m.type === 'event' && m.event) {
      this.mergeEvents([m.event]);
    }
  }

  private onStatus(s: StreamStatus): void {
    const wasDown = this.status === 'reconnecting';
    this.status = s;
    // Back after a drop: events may have been missed, and a restarted kernel numbers them from 1 again.
    if (s === 'open' && wasDown && this.api) {
      const gen = this.generation;
      this.api.events(100).then(
        (evs) => {
          if (gen !== this.generation) return;
          this.events = [];
          this.mergeEvents(evs);
        },
        () => undefined,
      );
      void this.refreshServices();
    }
    // A stream that keeps failing may be a revoked token: ask the REST API, which says 401 clearly.
    if (s === 'reconnecting' && this.api) {
      const gen = this.generation;
      this.api.agents().then(
        (a) => gen === this.generation && (this.agents = a),
        (e) => {
          if (gen === this.generation && e instanceof ApiError && e.unauthorized)
            this.toAuth('The token was refused.');
        },
      );
    }
  }

  /** Newest first, without the duplicates a REST page and the stream may share. */
  private mergeEvents(newOnes: KernelEvent[]): void {
    const key = (e: KernelEvent) =>
      e.seq !== undefined ? `s${e.seq}` : `${e.timestamp}:${e.type}:${JSON.stringify(e.data ?? {})}`;
    const seen = new Set(this.events.map(key));
    const add = newOnes.filter((e) => !seen.has(key(e)));
    if (!add.length) return;
    this.events = [...add, ...this.events]
      .sort((a, b) => (b.seq ?? b.timestamp) - (a.seq ?? a.timestamp))
      .slice(0, MAX_EVENTS);
  }

  private async refreshServices(): Promise<void> {
    const api = this.api;
    if (!api) return;
    try {
      const s = await api.services();
      if (api === this.api) this.services = s;
    } catch {
      // the grid still works without services
    }
  }

  private async refreshLogs(): Promise<void> {
    const api = this.api;
    const id = this.selected;
    if (!api || id === null) return;
    try {
      const lines = await api.logs(id, LOG_TAIL);
      if (api === this.api && id === this.selected) {
        const pre = this.querySelector('[data-testid="log-tail"]');
        const atBottom = !pre || pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
        this.logs = lines;
        this.logsError = '';
        if (atBottom) void this.updateComplete.then(() => pre && (pre.scrollTop = pre.scrollHeight));
      }
    } catch (e) {
      if (api === this.api && id === this.selected) this.logsError = (e as Error).message;
    }
  }

  private drawCharts(): void {
    for (const def of CHARTS) {
      const el = this.querySelector<CloveChart>(`clove-chart[data-chart="${def.id}"]`);
      el?.setData(this.sampler.columns(def.keys));
    }
  }

  // ── actions ─────────────────────────────────────────────────────────────────────────────

  private async act(agent: AgentRow, verb: Verb): Promise<void> {
    if (!this.api) return;
    if (verb === 'kill' && this.armedKill !== agent.id) {
      this.armedKill = agent.id;
      if (this.armTimer) clearTimeout(this.armTimer);
      this.armTimer = setTimeout(() => (this.armedKill = null), 4000);
      return;
    }
    this.armedKill = null;
    const key = `${agent.id}:${verb}`;
    this.busy = new Set(this.busy).add(key);
    try {
      await this.api.act(agent.id, verb);
      this.flash(`${verb} ${agent.name}: done`, 'ok');
      this.agents = await this.api.agents();
    } catch (e) {
      if (e instanceof ApiError && e.unauthorized) return this.toAuth('The token was refused.');
      this.flash(`${verb} ${agent.name} failed: ${(e as Error).message}`, 'error');
    } finally {
      const b = new Set(this.busy);
      b.delete(key);
      this.busy = b;
    }
  }

  private async scale(s: ServiceRow, delta: number): Promise<void> {
    if (!this.api) return;
    const replicas = Math.max(0, s.replicas + delta);
    try {
      await this.api.scale(s.project, s.service, replicas);
      this.flash(`${s.project}/${s.service} scaled to ${replicas}`, 'ok');
      await this.refreshServices();
    } catch (e) {
      if (e instanceof ApiError && e.unauthorized) return this.toAuth('The token was refused.');
      this.flash(`scale ${s.project}/${s.service} failed: ${(e as Error).message}`, 'error');
    }
  }

  private select(agent: AgentRow): void {
    this.selected = this.selected === agent.id ? null : agent.id;
    this.logs = [];
    this.logsError = '';
    void this.refreshLogs();
  }

  private flash(text: string, kind: 'ok' | 'error'): void {
    this.notice = { text, kind };
    if (this.noticeTimer) clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => (this.notice = null), kind === 'error' ? 8000 : 3000);
  }

  // ── rendering ───────────────────────────────────────────────────────────────────────────

  override render(): TemplateResult {
    if (this.phase === 'auth') return this.renderAuth();
    return html`${this.renderHeader()}
      <main>
        ${this.fleet ? this.renderMachines() : nothing}
        ${
          this.phase === 'loading'
            ? html`<p class="muted" data-testid="loading">${this.loadError || 'Connecting…'}</p>`
            : this.fleet && !this.machine
              ? html`<p class="muted">No machine is connected to this relay yet.</p>`
              : this.renderKernel()
        }
      </main>
      ${
        this.notice
          ? html`<div class="notice ${this.notice.kind}" data-testid="notice" role="status">
              ${this.notice.text}
            </div>`
          : nothing
      }`;
  }

  private renderAuth(): TemplateResult {
    return html`<div class="auth" data-testid="auth-prompt">
      <form @submit=${this.onSubmitToken}>
        <h1><span class="logo">◆</span> Clove</h1>
        <p>
          Paste the API token: the kernel prints the dashboard URL with it at start, and keeps it in
          <code>&lt;data-dir&gt;/http-token</code>.
        </p>
        <input
          data-testid="token-input"
          type="password"
          autocomplete="off"
          spellcheck="false"
          placeholder="token"
          aria-label="API token"
        />
        <button type="submit" data-testid="token-submit">Open dashboard</button>
        ${
          this.authError
            ? html`<p class="error" data-testid="auth-error" role="alert">${this.authError}</p>`
            : nothing
        }
      </form>
    </div>`;
  }

  private renderHeader(): TemplateResult {
    const label: Record<StreamStatus, string> = {
      open: 'live',
      connecting: 'connecting…',
      reconnecting: 'reconnecting…',
      closed: 'offline',
    };
    return html`<header>
      <div class="brand"><span class="logo">◆</span> Clove</div>
      ${
        this.fleet
          ? html`<div class="where" data-testid="current-machine">
              machine <strong>${this.machine ?? '—'}</strong>
            </div>`
          : html`<div class="where">kernel</div>`
      }
      <div class="spacer"></div>
      <div class="conn ${this.status}" data-testid="conn-status" data-state=${this.status}>
        <span class="dot"></span>${label[this.status]}
      </div>
      <button class="ghost" data-testid="sign-out" @click=${this.signOut}>Sign out</button>
    </header>`;
  }

  private renderMachines(): TemplateResult {
    return html`<section class="card machines" data-testid="machines">
      <h2>Machines</h2>
      <table>
        <thead>
          <tr>
            <th>Machine</th>
            <th>Connected</th>
            <th class="num">Agents</th>
          </tr>
        </thead>
        <tbody>
          ${repeat(
            this.fleet ?? [],
            (m) => m.id,
            (m) =>
              html`<tr
                data-testid="machine-row"
                data-machine=${m.id}
                class=${m.id === this.machine ? 'selected' : ''}
                @click=${() => void this.openMachine(m.id)}
              >
                <td><a href="#" @click=${(e: Event) => e.preventDefault()}>${m.id}</a></td>
                <td>
                  <span class="pill ${m.connected ? 'ok' : 'bad'}"
                    >${m.connected ? 'connected' : 'offline'}</span
                  >
                </td>
                <td class="num" data-testid="machine-agents">
                  ${m.id === this.machine && this.phase === 'ready' ? this.agents.length : (m.agents ?? '—')}
                </td>
              </tr>`,
          )}
        </tbody>
      </table>
    </section>`;
  }

  private renderKernel(): TemplateResult {
    const running = this.agents.filter((a) => a.state === 'RUNNING').length;
    const restarts = this.agents.reduce((n, a) => n + (a.restarts ?? 0), 0);
    const cpu = this.system?.cpu?.percent;
    const mem = this.system?.memory;
    return html`<section class="stats">
        <div class="stat">
          <span>Agents</span><strong data-testid="stat-agents">${this.agents.length}</strong>
        </div>
        <div class="stat"><span>Running</span><strong data-testid="stat-running">${running}</strong></div>
        <div class="stat"><span>Restarts</span><strong data-testid="stat-restarts">${restarts}</strong></div>
        <div class="stat"><span>Machine CPU</span><strong>${percent(cpu)}</strong></div>
        <div class="stat">
          <span>Machine memory</span><strong>${bytes(mem?.used)} / ${bytes(mem?.total)}</strong>
        </div>
      </section>
      <section class="charts" data-testid="charts" data-samples=${this.sampler.ring.size}>
        ${CHARTS.map(
          (c) =>
            html`<clove-chart
              class="card"
              data-chart=${c.id}
              data-testid="chart-${c.id}"
              .heading=${c.heading}
              .series=${c.series}
              .unit=${c.unit ?? ((v: number) => String(v))}
            ></clove-chart>`,
        )}
      </section>
      ${this.renderAgents()}
      <section class="split">${this.renderLogs()} ${this.renderEvents()}</section>
      ${this.services.length ? this.renderServices() : nothing}`;
  }

  private renderAgents(): TemplateResult {
    const needle = this.filter.trim().toLowerCase();
    const matching = this.agents
      .filter((a) => !needle || matches(a, needle))
      .sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id);
    const rows = matching.slice(0, MAX_ROWS);
    return html`<section class="card">
      <div class="title-row">
        <h2>Agents</h2>
        <input
          class="filter"
          data-testid="agent-filter"
          type="search"
          placeholder="filter: name, state, label, node"
          aria-label="filter agents"
          .value=${this.filter}
          @input=${(e: Event) => (this.filter = (e.target as HTMLInputElement).value)}
        />
        ${
          matching.length > rows.length
            ? html`<span class="muted" data-testid="agents-truncated"
                >showing ${rows.length} of ${matching.length}: filter to narrow</span
              >`
            : needle
              ? html`<span class="muted">${matching.length} of ${this.agents.length}</span>`
              : nothing
        }
      </div>
      <div class="scroll">
        <table class="agents" data-testid="agents-grid">
          <thead>
            <tr>
              <th>Name</th>
              <th>State</th>
              <th class="num">PID</th>
              <th class="num">Restarts</th>
              <th class="num">CPU</th>
              <th class="num">Memory</th>
              <th class="num">Msgs in</th>
              <th class="num">Msgs out</th>
              <th class="num">Mailbox</th>
              <th>Quota</th>
              <th>Actions</th>
            </tr>
          </thead>
          <tbody>
            ${
              rows.length
                ? repeat(
                    rows,
                    (a) => a.id,
                    (a) => this.renderAgent(a),
                  )
                : html`<tr>
                    <td colspan="11" class="muted" data-testid="no-agents">No agents.</td>
                  </tr>`
            }
          </tbody>
        </table>
      </div>
    </section>`;
  }

  private renderAgent(a: AgentRow): TemplateResult {
    const q = worstQuota(a);
    const busy = (v: Verb) => this.busy.has(`${a.id}:${v}`);
    const svc = a.labels?.['clove.service'];
    return html`<tr
      data-testid="agent-row"
      data-agent-id=${a.id}
      data-agent-name=${a.name}
      class=${this.selected === a.id ? 'selected' : ''}
    >
      <td>
        <button class="link" data-testid="agent-name" title="show its log" @click=${() => this.select(a)}>
          ${a.name}
        </button>
        ${svc ? html`<span class="tag">${a.labels?.['clove.project']}/${svc}</span>` : nothing}
        ${a.node ? html`<span class="tag">${a.node}</span>` : nothing}
      </td>
      <td><span class="pill ${stateClass(a.state)}" data-testid="agent-state">${a.state}</span></td>
      <td class="num" data-testid="agent-pid">${a.pid || '—'}</td>
      <td class="num" data-testid="agent-restarts">${a.restarts}</td>
      <td class="num" data-testid="agent-cpu">${percent(a.cpu_percent)}</td>
      <td class="num" data-testid="agent-memory">${bytes(a.memory_bytes)}</td>
      <td class="num" data-testid="agent-msgs-in">${a.messages_in ?? '—'}</td>
      <td class="num" data-testid="agent-msgs-out">${a.messages_out ?? '—'}</td>
      <td class="num" data-testid="agent-mailbox">${a.mailbox_depth ?? '—'}</td>
      <td data-testid="agent-quota">
        ${
          q
            ? html`<div class="quota ${q.meter.exceeded || q.fraction >= 1 ? 'over' : ''}" title=${q.name}>
                <div class="bar">
                  <div style="width:${Math.min(100, q.fraction * 100).toFixed(0)}%"></div>
                </div>
                <span>${(q.fraction * 100).toFixed(0)}% ${q.name}</span>
              </div>`
            : html`<span class="muted">no limit</span>`
        }
      </td>
      <td class="actions">
        <button
          data-testid="action-restart"
          ?disabled=${busy('restart')}
          @click=${() => this.act(a, 'restart')}
        >
          Restart
        </button>
        ${
          a.state === 'PAUSED'
            ? html`<button
                data-testid="action-resume"
                ?disabled=${busy('resume')}
                @click=${() => this.act(a, 'resume')}
              >
                Resume
              </button>`
            : html`<button
                data-testid="action-pause"
                ?disabled=${busy('pause') || a.state !== 'RUNNING'}
                @click=${() => this.act(a, 'pause')}
              >
                Pause
              </button>`
        }
        <button
          class="danger ${this.armedKill === a.id ? 'armed' : ''}"
          data-testid="action-kill"
          ?disabled=${busy('kill')}
          @click=${() => this.act(a, 'kill')}
        >
          ${this.armedKill === a.id ? 'Confirm kill' : 'Kill'}
        </button>
      </td>
    </tr>`;
  }

  private renderLogs(): TemplateResult {
    const agent = this.agents.find((a) => a.id === this.selected);
    return html`<div class="card logs" data-testid="log-panel">
      <h2>
        Log
        ${agent ? html`<span class="muted">— ${agent.name}</span>` : this.selected !== null ? `#${this.selected}` : nothing}
      </h2>
      ${
        this.selected === null
          ? html`<p class="muted">Click an agent's name to follow its log.</p>`
          : html`${this.logsError ? html`<p class="error">${this.logsError}</p>` : nothing}
              <pre data-testid="log-tail">${this.logs.join('\n') || '(empty)'}</pre>`
      }
    </div>`;
  }

  private renderEvents(): TemplateResult {
    const nameOf = (e: KernelEvent): string => {
      const d = e.data ?? {};
      const n = d.name ?? d.agent_name;
      if (typeof n === 'string') return n;
      const id = typeof d.agent_id === 'number' ? d.agent_id : e.source_agent_id;
      return this.agents.find((a) => a.id === id)?.name ?? (id ? `#${id}` : 'kernel');
    };
    return html`<div class="card events" data-testid="event-panel">
      <h2>Events</h2>
      <div class="scroll">
        <table>
          <tbody>
            ${
              this.events.length
                ? repeat(
                    this.events,
                    (e) => e.seq ?? `${e.timestamp}:${e.type}:${JSON.stringify(e.data ?? {})}`,
                    (e) =>
                      html`<tr data-testid="event-row" data-event-type=${e.type}>
                        <td class="time">${clock(e.timestamp)}</td>
                        <td><span class="etype ${e.type.toLowerCase()}">${e.type}</span></td>
                        <td>${nameOf(e)}</td>
                        <td class="muted">${eventSummary(e.data)}</td>
                      </tr>`,
                  )
                : html`<tr>
                    <td class="muted">No events yet.</td>
                  </tr>`
            }
          </tbody>
        </table>
      </div>
    </div>`;
  }

  private renderServices(): TemplateResult {
    return html`<section class="card" data-testid="services">
      <h2>Services</h2>
      <table>
        <thead>
          <tr>
            <th>Project</th>
            <th>Service</th>
            <th class="num">Replicas</th>
            <th>Scale</th>
          </tr>
        </thead>
        <tbody>
          ${repeat(
            this.services,
            (s) => `${s.project}/${s.service}`,
            (s) =>
              html`<tr data-testid="service-row" data-service="${s.project}/${s.service}">
                <td>${s.project}</td>
                <td>${s.service}</td>
                <td class="num" data-testid="service-replicas">${s.replicas}</td>
                <td class="actions">
                  <button
                    data-testid="scale-down"
                    title=${s.replicas <= 1 ? 'the last replica: stop it with clove down' : 'one replica less'}
                    ?disabled=${s.replicas <= 1}
                    @click=${() => this.scale(s, -1)}
                  >
                    −1
                  </button>
                  <button data-testid="scale-up" @click=${() => this.scale(s, +1)}>+1</button>
                </td>
              </tr>`,
          )}
        </tbody>
      </table>
    </section>`;
  }
}

customElements.define('clove-dashboard', CloveDashboard);
