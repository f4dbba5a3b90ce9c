/**
 * The Clove kernel, assembled: services, syscall families, transports. This file only wires parts
 * together (docs/architecture.md); the parts live in core/ (listen, identify, dispatch), syscalls/ (one
 * folder per family), and the service folders.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import pino from 'pino';
import {
  type KernelOptions,
  checkFastPathPollUs,
  defaultBudgets,
  defaultOptions,
  REPO_ROOT,
  resolveFastPathPollUs,
} from './config.js';
import { AgentService, survivingPids } from './agents/agents.js';
import { cpuQuotaOf, detectHostLayout } from './sandbox/cgroups.js';
import { AuditLog } from './audit/log.js';
import { AsyncCalls } from './core/async.js';
import { Op, opInfo, type OpName } from '../protocol/index.js';
import type { Connection } from './core/connection.js';
import type { FamilyFactory, Services } from './core/context.js';
import { Dispatcher } from './core/dispatch.js';
import { KernelStartError } from './core/errors.js';
import { FastPath, NativeSocket } from './core/native-socket.js';
import { Principals, type Stats } from './core/principals.js';
import { describeNofile, raiseNofileLimit } from './core/rlimits.js';
import { claimSocketPath, Server, UnixTransport } from './core/server.js';
import { EventBus } from './events/bus.js';
import { PostOffice, QueuedBytes, reachableState, type Mail } from './ipc/mailboxes.js';
import { DurableMail } from './ipc/mail-store.js';
import { createNativeMail, type NativePostOffice } from './ipc/native-mail.js';
import { MetricsService } from './metrics/service.js';
import { agentCgroupMetrics } from './metrics/cgroup.js';
import { processMetrics } from './metrics/process.js';
import { QuotaService } from './quotas/service.js';
import { loadNative, nativeAvailable } from './sandbox/native.js';
import { loadSandbox, type SandboxRuntime } from './sandbox/runtime.js';
import { StateStore } from './state/store.js';
import { AgentLogs } from './supervisor/logs.js';
import { Supervisor } from './supervisor/supervisor.js';
import { KERNEL_VERSION } from './version.js';
import core from './syscalls/core/index.js';
import lifecycle from './syscalls/lifecycle/index.js';
import ipc from './syscalls/ipc/index.js';
import state from './syscalls/state/index.js';
import events from './syscalls/events/index.js';
import perms from './syscalls/perms/index.js';
import metrics from './syscalls/metrics/index.js';
import files from './syscalls/files/index.js';
import exec from './syscalls/exec/index.js';
import http from './syscalls/http/index.js';
import llm from './syscalls/llm/index.js';
import audit from './syscalls/audit/index.js';
import record from './syscalls/record/index.js';
import asyncFamily from './syscalls/async/index.js';
import quotas from './syscalls/quotas/index.js';
import tasks from './syscalls/tasks/index.js';
import cluster from './syscalls/cluster/index.js';
import tunnel from './syscalls/tunnel/index.js';
import { TunnelClient, tunnelUrl, type TunnelApi } from './tunnel/client.js';
import { RelayTransport } from './tunnel/transport.js';
import world from './syscalls/world/index.js';
import mcp from './syscalls/mcp/index.js';
import journal from './syscalls/journal/index.js';
import { Journal } from './journal/service.js';
import { WorldService } from './worlds/service.js';
import { applyPressure } from './worlds/pressure.js';
import type { ClusterEngines, ClusterService } from './cluster/cluster.js';
import { ClusterRouter } from './cluster/router.js';
import type { ClusterOptions } from './cluster/types.js';
import type { HttpHandle, KernelApiOptions } from './http/index.js';

export { KERNEL_VERSION } from './version.js';
export { KernelStartError } from './core/errors.js';

/** The syscall families, one registration line each (docs/architecture.md: adding a family). */
const FAMILIES: FamilyFactory[] = [
  core,
  lifecycle,
  ipc,
  state,
  events,
  perms,
  metrics,
  files,
  exec,
  http,
  llm,
  audit,
  record,
  asyncFamily,
  quotas,
  tasks,
  cluster,
  tunnel,
  world,
  mcp,
  journal,
];

/** How a clustered kernel gets its engines (tests hand in their own): the real ones by default. */
export type ClusterEngineFactory = (
  o: ClusterOptions,
  deps: { log: pino.Logger; version: string },
) => Promise<ClusterEngines>;

export class Kernel {
  readonly opts: KernelOptions;
  readonly log: pino.Logger;
  readonly agentSocketPath: string;
  private readonly post: Mail;
  /** Without the fast path (and unless --mail-durability off): the same object as `post`. */
  private durableMail?: DurableMail;
  /** With the fast path: the same object as `post`, over the native store the reactor serves from. */
  private readonly nativeMail?: NativePostOffice;
  /** Whether some observer must see every call in JavaScript (log_syscalls, recording): no fast calls then. */
  private recording = false;
  private readonly events: EventBus;
  private readonly logs: AgentLogs;
  private readonly supervisor: Supervisor;
  private readonly principals: Principals;
  private store?: StateStore;
  private audit?: AuditLog;
  private quotas?: QuotaService;
  private worlds?: WorldService;
  private journal?: Journal;
  private readonly asyncCalls = new AsyncCalls(
    (id) => this.principals.budgets(id).async_requests,
    (caller, op, reply) =>
      this.audit?.refusal(caller, op, opInfo(Op[op as OpName])?.family ?? '', reply, { async: true }),
  );
  private sandbox?: SandboxRuntime;
  private server?: Server;
  /** With `fastPath` on: the reactor thread and its mail store (docs/fastpath.md). */
  private fastPath?: FastPath;
  private dispatcher?: Dispatcher;
  private closing: Promise<void> | null = null;
  /** With `--cluster` (docs/cluster.md): names, ids, mail, events and agents across nodes. */
  private cluster?: ClusterService;
  /** Remote wire-protocol sessions through the relay, and the tunnel that carries them (docs/relay.md). */
  private remotes?: RelayTransport;
  private tunnel?: TunnelClient;
  /** The HTTP API as the tunnel serves it: --http's, or one built for the tunnel on first use. */
  private tunnelApi?: Promise<TunnelApi & { close?(): void }>;
  /** With `--http` (docs/http.md): the HTTP API, the dashboard and /metrics. */
  private http?: HttpHandle;
  private readonly startedAt = Date.now();
  /** The sockets accept (readiness: /readyz). */
  private listening = false;

  /** Where the HTTP API listens (`http://HOST:PORT`), when it does. */
  get httpUrl(): string | undefined {
    return this.http?.url;
  }

  /** `logStream`: where the JSON log lines go (default stderr); kernel/main.ts passes a pretty-printer. */
  constructor(
    options: Partial<KernelOptions> = {},
    logStream?: pino.DestinationStream,
    private readonly clusterEngines?: ClusterEngineFactory,
  ) {
    this.opts = defaultOptions(options);
    checkFastPathPollUs(this.opts.fastPathPollUs);
    this.log = pino(
      { level: this.opts.logLevel, base: { svc: 'clove' } },
      logStream ?? pino.destination({ dest: 2, sync: true }),
    );
    this.agentSocketPath = path.join(this.opts.dataDir, 'run', 'agent.sock');
    const budgets = (id: number) => this.principals.budgets(id);
    if (this.opts.fastPath) {
      // One set of mailboxes for both paths: the native store, which the reactor thread serves from.
      const native = createNativeMail(loadNative(), {
        budgetsOf: budgets,
        queuedBytesLimit: this.opts.maxQueuedBytes,
        maxReplyBytes: this.opts.maxReplyBytes,
        maxDepth: this.opts.maxDepth,
        broadcastToJs: this.opts.cluster !== null,
      });
      this.post = this.nativeMail = native.mail;
      this.events = new EventBus(budgets, native.eventBytes);
    } else {
      const queued = new QueuedBytes(this.opts.maxQueuedBytes);
      const post = new PostOffice(budgets, queued);
      // Agents' messages written through to state.db, so that a kernel crash loses none (docs/restart.md).
      this.post = this.opts.mailDurability === 'off' ? post : (this.durableMail = new DurableMail(post));
      this.events = new EventBus(budgets, queued);
    }
    // First, so that the logs directory (0700) does not create it 0700: agents of other uids must be
    // able to pass through it to run/agent.sock.
    fs.mkdirSync(this.opts.dataDir, { recursive: true, mode: 0o711 });
    this.logs = new AgentLogs({
      dir: path.join(this.opts.dataDir, 'logs'),
      maxBytes: this.opts.logMaxBytes,
      keep: this.opts.logKeep,
      checkIntervalMs: this.opts.logCheckIntervalMs,
    });
    this.supervisor = new Supervisor(
      this.logs,
      {
        event: (type, data, source) => {
          this.events.publish(type as never, data, source);
          if (this.nativeMail && typeof data.agent_id === 'number') this.syncReachable(data.agent_id);
          this.audit?.record({
            category: 'AGENT_LIFECYCLE',
            event_type: type,
            agent_id: Number(data.agent_id ?? 0),
            agent_name: String(data.name ?? data.agent_name ?? ''),
            success: type !== 'AGENT_ESCALATED',
            details: data,
          });
        },
        started: (a) => {
          this.syncReachable(a.def.id);
          // Its pid's record may wait for a promoted standby's first call (Supervisor.later).
          this.supervisor.later(a, () => this.agents?.started(a));
          this.quotas?.started(a);
          this.journal?.processStarted(a.def.identity, a.def.durable === true);
        },
        release: (a) => {
          this.agents?.released(a);
          this.release(a.def.id);
        },
        exited: (a) => {
          this.server?.dropConnectionsOf(a.def.id, (pid) => this.supervisor.isStandbyPid(a, pid));
          // A durable agent's run is done with when it ends on its own with 0, not when it is stopped.
          const e = a.lastExit;
          const finished =
            e?.code === 0 &&
            e.signal === null &&
            e.reason === 'exit' &&
            a.state !== 'STOPPING' &&
            a.state !== 'RESTARTING' &&
            !this.supervisor.shuttingDown;
          this.journal?.processExited(a.def.identity, finished);
        },
        log: (level, msg, fields) => this.log[level](fields ?? {}, msg),
      },
      { spareSandboxes: this.opts.spareSandboxes },
    );
    this.principals = new Principals(
      {
        agentOfPid: (pid) => this.agents?.agentOfPid(pid),
        spawnsSettled: () => this.supervisor.spawnsSettled(),
      },
      process.getuid?.() ?? 0,
      defaultBudgets(this.opts),
    );
  }

  private agents?: AgentService;

  async start(): Promise<void> {
    const o = this.opts;
    // Before the first socket: descriptors must not be what stops the kernel short of its agents.
    const nofile = nativeAvailable() ? raiseNofileLimit((s, h) => loadNative().setNofile(s, h)) : null;
    fs.mkdirSync(o.dataDir, { recursive: true, mode: 0o711 });
    fs.mkdirSync(path.join(o.dataDir, 'work'), { recursive: true, mode: 0o711 });
    fs.mkdirSync(path.dirname(this.agentSocketPath), { recursive: true, mode: 0o711 });
    fs.chmodSync(path.dirname(this.agentSocketPath), 0o711);
    // Before anything touches the data dir: refuse to start beside a live kernel.
    await claimSocketPath(o.socketPath);
    await claimSocketPath(this.agentSocketPath);
    const relayToken = o.relay ? readTokenFile(o.relay.tokenFile) : null;
    if (o.relay) checkRelayUrl(o.relay.url);
    const python = await resolvePython();
    const store = (this.store = new StateStore({
      path: path.join(o.dataDir, 'state.db'),
      durability: o.durability,
    }));
    const audit = (this.audit = new AuditLog({
      path: path.join(o.dataDir, 'state.db'),
      durability: o.durability,
    }));
    // Agents a dead kernel on this data dir left running: their cgroups stay, they are re-adopted below.
    // A clustered kernel's agents die with it: the cluster runs them again on the surviving nodes.
    const outlive = o.outliveKernel && !o.cluster;
    const keepPids = outlive ? survivingPids(o.dataDir, o.durability) : new Set<number>();
    this.durableMail?.open({
      // A file of its own: its transactions span a connection's batch of frames, and must never hold
      // the write lock of state.db (the registry and the state store write there in the same batch).
      path: path.join(o.dataDir, 'mail.db'),
      durability: o.durability,
      identityOf: (id) => this.agents?.identityOf(id),
      log: this.log,
    });
    const sandbox = (this.sandbox = await loadSandbox(o.sandbox, this.log, o.agentUidBase, o.dataDir, {
      outliveKernel: outlive,
      keepPids,
    }));
    this.agents = new AgentService({
      supervisor: this.supervisor,
      mail: this.post,
      principals: this.principals,
      sandbox,
      logs: this.logs,
      log: this.log,
      dataDir: o.dataDir,
      agentSocket: this.agentSocketPath,
      pythonPath: o.pythonPath,
      installDir: REPO_ROOT,
      python,
      reservedNames: o.reservedNames,
      durability: o.durability,
      worlds: {
        check: (id) => this.worlds!.check(id),
        place: (identity, id) => this.worlds!.place(identity, id),
      },
      events: this.events,
      onIdentityBack: (identity, id) => {
        const n = this.durableMail?.restoreFor(identity, id) ?? 0;
        if (n) this.log.info({ identity, id, messages: n }, 'queued messages given back');
      },
      onIdentityEnded: (identity) => {
        this.durableMail?.identityEnded(identity);
        this.worlds?.identityEnded(identity);
        store.dropAgentNamespace(identity);
        this.quotas?.identityEnded(identity);
        this.journal?.identityEnded(identity);
      },
    });
    // Journaled steps (docs/durable.md): by identity, so after the identities; before any agent starts.
    const agentsForJournal = this.agents;
    this.journal = new Journal({
      dbPath: path.join(o.dataDir, 'state.db'),
      durability: o.durability,
      budget: (id) => this.principals.budgets(id).journal_bytes,
      agent: (t) => {
        const a =
          t.id !== undefined
            ? agentsForJournal.get(t.id)
            : agentsForJournal.list().find((x) => x.def.name === t.name);
        return a ? { id: a.def.id, identity: a.def.identity } : undefined;
      },
      audit,
      log: this.log,
    });
    const swept = this.journal.sweep(this.agents.liveIdentities());
    const orphanMail = this.durableMail?.prune(this.agents.liveIdentities()) ?? 0;
    if (orphanMail)
      this.log.info({ messages: orphanMail }, 'dropped stored messages of identities that ended');
    if (swept) this.log.info({ steps: swept }, 'journal: dropped the steps of ended identities');
    // Quotas: usage counted by the kernel, CPU and memory read from each agent's cgroup (else its process).
    const quotaService = (this.quotas = new QuotaService({
      dbPath: path.join(o.dataDir, 'state.db'),
      durability: o.durability,
      agents: this.agents,
      audit,
      publish: (type, data, source) => this.events.publish(type, data, source),
      sample: (a) => {
        const cg = sandbox.cgroupOf(a.proc);
        const root = sandbox.cgroupRoot();
        if (cg && root) {
          const m = agentCgroupMetrics(root, cg);
          const source = [...cg.dirs.values()][0];
          if (m.valid && source) return { cpuUsec: m.cpu.usage_usec, memory: m.memory.current, source };
        }
        const p = a.proc ? processMetrics(a.pid) : undefined;
        return p
          ? {
              cpuUsec: (p.cpu.time_user_ms + p.cpu.time_system_ms) * 1000,
              memory: p.memory.rss,
              source: `pid:${a.pid}`,
            }
          : undefined;
      },
      log: this.log,
    }));
    // Worlds (docs/worlds.md): in the state db; members by identity, so after agents' identities.
    const agents = this.agents;
    this.worlds = new WorldService({
      dbPath: path.join(o.dataDir, 'state.db'),
      durability: o.durability,
      agents: () =>
        agents.list().map((a) => ({ id: a.def.id, identity: a.def.identity, pid: a.proc ? a.pid : 0 })),
      identityOf: (id) => agents.identityOf(id),
      mayControl: (caller, id) => {
        const a = agents.get(id);
        return a !== undefined && agents.mayControl(caller, a);
      },
      publish: (type, data, source) => this.events.publish(type, data, source),
      pressure: (id, p) => {
        const a = agents.get(id);
        const cg = a ? sandbox.cgroupOf(a.proc) : undefined;
        return cg ? applyPressure(cg, p) : undefined;
      },
      log: this.log,
    });
    if (o.cluster) {
      // Loaded only here: a kernel without --cluster never imports etcd3 or nats.
      const mod = await import('./cluster/cluster.js');
      const joining = async () => {
        const engines = await (this.clusterEngines ?? mod.createEngines)(o.cluster!, {
          log: this.log,
          version: KERNEL_VERSION,
        });
        const c = new mod.ClusterService(o.cluster!, engines, {
          mail: this.post,
          events: this.events,
          agents: this.agents!,
          principals: this.principals,
          log: this.log,
          version: KERNEL_VERSION,
        });
        await c.start();
        return c;
      };
      try {
        this.cluster = await joining();
      } catch (e) {
        throw new KernelStartError(
          `cannot join the cluster (etcd ${o.cluster.etcd.join(',')}, NATS ${o.cluster.nats.join(',')}): ${(e as Error).message}`,
          10,
        );
      }
      this.agents.attachCluster(this.cluster);
    }
    const remotes = (this.remotes = new RelayTransport(
      this.principals,
      () => this.closing !== null,
      this.log,
    ));
    const agentsService = this.agents;
    const tunnelClient = (this.tunnel = new TunnelClient({
      log: this.log,
      version: KERNEL_VERSION,
      agents: () => agentsService.list().length,
      api: () => this.apiForTunnel(),
      remotes,
    }));
    const services: Services = {
      kernel: {
        version: KERNEL_VERSION,
        maxPayload: o.maxPayload,
        maxDepth: o.maxDepth,
        maxReplyBytes: o.maxReplyBytes,
        dataDir: o.dataDir,
        agentSocket: this.agentSocketPath,
        sandbox: sandbox.summary,
      },
      principals: this.principals,
      agents: this.agents,
      mail: this.post,
      events: this.events,
      store,
      metrics: new MetricsService(sandbox, (id) => this.statsOf(id)),
      audit,
      quotas: quotaService,
      async: this.asyncCalls,
      worlds: this.worlds,
      journal: this.journal,
      publish: (type, data, source) => this.events.publish(type, data, source),
      ...(this.cluster ? { cluster: this.cluster } : {}),
      tunnel: { client: tunnelClient, remotes },
      log: this.log,
    };
    const supervisor = this.supervisor;
    // Operators' calls on agents of other nodes go there (kernel/cluster/router.ts); SPAWN `node` too.
    const router = new ClusterRouter({
      ...(this.cluster ? { cluster: this.cluster } : {}),
      agents: this.agents,
      principals: this.principals,
      log: this.log,
    });
    const dispatcher = (this.dispatcher = new Dispatcher(
      services,
      {
        beat: (id) => supervisor.heartbeat(id),
        parked: (id, delta) => supervisor.parked(id, delta),
      },
      router,
    ));
    for (const family of FAMILIES) dispatcher.register(family);
    router.attach(dispatcher);
    const server = (this.server = new Server({
      dispatcher,
      maxPayload: o.maxPayload,
      log: this.log,
      opened: (conn) => {
        this.principals.clientOpened(conn.principal);
        // A RECV with `lease` served in JavaScript holds its lease as the reactor's connection does.
        if (this.nativeMail && conn.socket instanceof NativeSocket)
          this.nativeMail.bindHolder(conn.abort.signal, conn.socket.conn);
      },
      closed: (conn) => this.connectionClosed(conn),
      // An agent's connection at end of file: its process may be ending (a killed agent is known sooner).
      inputEnded: ({ principal: p }) => {
        if (p.role === 'agent' && p.pid !== undefined) this.supervisor.peerEnded(p.id, p.pid);
      },
      connectionBudget: (p) => this.principals.budgets(p.id).connections,
    }));
    let poll: { us: number; why: string } | undefined;
    if (o.fastPath) {
      const mail = this.nativeMail!;
      this.principals.watchClients((id, open) => {
        // Budgets first: the reactor refuses (hands to JavaScript) an id it has no budgets for.
        if (open) mail.refreshBudgets(id);
        mail.setReachable(id, open);
      });
      this.principals.watch((id) => mail.refreshBudgets(id));
      poll = resolveFastPathPollUs(
        o.fastPathPollUs,
        os.availableParallelism(),
        o.fastPathPollUs === 'auto' ? ownCpuQuota() : null,
      );
      this.fastPath = new FastPath({
        store: mail.store,
        fastFor: (id) => this.fastFor(id),
        maxPayload: o.maxPayload,
        queuedBytesLimit: o.maxQueuedBytes,
        maxReplyBytes: o.maxReplyBytes,
        maxDepth: o.maxDepth,
        pollUs: poll.us,
      });
      // Recording and log_syscalls see every call: while either is on, every call goes to JavaScript.
      dispatcher.observe((r) => {
        if (!r.success) return;
        if (r.op === 'RECORD_START') this.recording = true;
        else if (r.op === 'RECORD_STOP') this.recording = false;
        else if (r.op !== 'SET_AUDIT_CONFIG') return;
        this.fastPath?.refresh();
      });
    }
    this.log.info(
      { fast_path: o.fastPath, ...(poll ? { poll_us: poll.us } : {}) },
      // `poll` is set exactly when the fast path is on.
      poll
        ? `fast path on: connections are served by the native reactor thread; it polls ${poll.why}`
        : 'fast path off: connections are served by TypeScript',
    );
    const fastPath = this.fastPath;
    const transport = (file: string, mode: number, door: 'operator' | 'agent') =>
      new UnixTransport({
        path: file,
        mode,
        door,
        principals: this.principals,
        peerCredentials: (s) => sandbox.peerCredentials(s),
        closing: () => this.closing !== null,
        reserveFds: this.opts.operatorReserveFds,
        ...(fastPath ? { fastPath } : {}),
        log: this.log,
      });
    // Before any agent can connect: agents a dead kernel left running are theirs again (docs/restart.md),
    // so that their reconnecting SDKs are known agents, never strangers.
    if (o.outliveKernel && !o.cluster) await this.agents.adopt();
    // The operator socket comes last: once it accepts, the kernel is completely up (readiness signal).
    await server.listen([
      remotes,
      transport(this.agentSocketPath, 0o666, 'agent'),
      transport(o.socketPath, 0o600, 'operator'),
    ]);
    this.listening = true;
    this.log.info(
      {
        socket: o.socketPath,
        agent_socket: this.agentSocketPath,
        data_dir: o.dataDir,
        sandbox: sandbox.summary,
      },
      'clove kernel ready',
    );
    if (o.http) await this.startHttp(o.http, dispatcher);
    const fds = describeNofile(nofile, o.operatorReserveFds);
    this.log[fds.level](fds.fields, fds.msg);
    // What a previous kernel on this data dir left: its agents come back (docs/protocol.md §2).
    await this.agents.restore();
    if (o.relay) {
      // Dialled in the background: a relay that is down now is retried with backoff.
      tunnelClient.configure({
        relayUrl: o.relay.url,
        machineId: o.relay.machineId,
        token: relayToken,
      });
      await tunnelClient.connect(false);
    }
  }

  /** The HTTP API (loaded only with --http: a kernel without it never imports hono, ws or prom-client). */
  private async startHttp(at: { host: string; port: number }, dispatcher: Dispatcher): Promise<void> {
    const { startHttp } = await import('./http/index.js');
    try {
      this.http = await startHttp({ ...at, ...this.apiOptions(dispatcher) });
    } catch (e) {
      await this.close();
      throw new KernelStartError(`cannot serve HTTP on ${at.host}:${at.port}: ${(e as Error).message}`, 2);
    }
  }

  /** The API the tunnel forwards to: --http's app and stream, else the same app built without a listener. */
  private apiForTunnel(): Promise<TunnelApi & { close?(): void }> {
    if (this.tunnelApi) return this.tunnelApi;
    const http = this.http;
    const dispatcher = this.dispatcher!;
    this.tunnelApi = import('./http/index.js').then(({ ensureToken, createKernelApi }) => {
      if (http)
        return {
          fetch: (req: Request) => http.api.app.fetch(req),
          subscribe: (send: (m: string) => void) => http.api.subscribe(send),
          token: ensureToken(this.opts.dataDir),
        };
      const k = createKernelApi(this.apiOptions(dispatcher));
      return {
        fetch: (req: Request) => k.api.app.fetch(req),
        subscribe: (send: (m: string) => void) => k.api.subscribe(send),
        token: k.token,
        close: () => k.close(),
      };
    });
    return this.tunnelApi;
  }

  /** What the HTTP API (kernel/http/: `startHttp`, or `createKernelApi` for a listener of its own) needs. */
  private apiOptions(dispatcher: Dispatcher): KernelApiOptions {
    return {
      dataDir: this.opts.dataDir,
      dispatcher,
      principals: this.principals,
      events: this.events,
      log: this.log,
      maxBodyBytes: this.opts.maxPayload,
      ready: () => this.closing === null && this.listening,
      info: () => ({
        version: KERNEL_VERSION,
        pid: process.pid,
        started_at: this.startedAt,
        uptime_ms: Date.now() - this.startedAt,
        fast_path: this.opts.fastPath,
        node: this.opts.cluster?.node ?? null,
        sandbox: this.sandbox?.summary ?? null,
      }),
      templates: { spawnRequestOf: (id) => this.agents?.spawnRequestOf(id) },
      ...(this.fastPath ? { fastPathPoll: () => this.fastPath!.reactor.pollStats() } : {}),
    };
  }

  /** Tells the fast path whether an agent may be sent to (as the ipc family decides: alive for the kernel). */
  private syncReachable(id: number): void {
    const a = this.supervisor.get(id);
    if (!this.nativeMail || !a) return;
    const reachable = reachableState(a.state);
    if (reachable) this.nativeMail.refreshBudgets(id);
    this.nativeMail.setReachable(id, reachable);
  }

  /**
   * Whether a principal's calls may be served by the reactor: not while the audit log writes every call
   * or a recording runs (observers see only calls made in JavaScript), and never for an agent with a
   * watchdog (the watchdog counts its calls, and its parked RECVs, as signs of life).
   */
  private fastFor(id: number): boolean {
    if (this.recording || this.audit?.enabled('SYSCALL')) return false;
    return !((this.supervisor.get(id)?.def.policy.watchdogMs ?? 0) > 0);
  }

  /** A principal's counters, with the calls the fast path served (counted in the native store). */
  private statsOf(id: number): Stats {
    const s = this.principals.stats(id);
    if (!this.nativeMail) return s;
    const n = this.nativeMail.stats(id);
    return {
      ...s,
      syscalls: s.syscalls + n.syscalls,
      sent: s.sent + n.sent,
      received: s.received + n.received,
    };
  }

  /** A client that is not an agent is gone for good with its connection (families clean up through onClose). */
  private connectionClosed(conn: Connection): void {
    if (conn.principal.role !== 'agent') this.release(conn.principal.id);
  }

  /** Forgets a principal that is gone for good: names, mailbox, subscriptions, rights, counters. */
  private release(id: number): void {
    this.asyncCalls.drop(id);
    this.cluster?.releaseId(id);
    this.post.release(id);
    this.events.drop(id);
    this.principals.forget(id);
  }

  /**
   * Hands the agents over to the next kernel (SIGHUP, `clove kernel --upgrade`; docs/restart.md): stops
   * accepting, closes every connection (SDKs reconnect to the next kernel) and the stores, and leaves every
   * agent running with its cgroups, recorded for re-adoption. A clustered kernel cannot hand over: it
   * closes as on SIGTERM.
   */
  detach(): Promise<void> {
    if (this.opts.cluster || !this.opts.outliveKernel) return this.close();
    if (!this.closing) this.closing = this.doDetach();
    return this.closing;
  }

  private async doDetach(): Promise<void> {
    this.tunnel?.close();
    void this.tunnelApi?.then((a) => a.close?.()).catch(() => {});
    this.server?.stopListening();
    await this.supervisor.detach();
    await this.http?.close();
    this.server?.closeAll();
    await this.closeServices();
    this.sandbox?.detach();
    this.log.info(
      { agents: this.supervisor.list().filter((a) => a.proc).length },
      'clove kernel handed over: its agents keep running for the next kernel',
    );
  }

  /** The last of a close or a hand-over, connections gone: the reactor thread, the dispatcher, the stores. */
  private async closeServices(): Promise<void> {
    this.fastPath?.close();
    await this.dispatcher?.close();
    this.quotas?.close();
    this.worlds?.close();
    this.journal?.close();
    this.durableMail?.close();
    this.store?.close();
    this.audit?.close();
    this.agents?.close();
    this.logs.close();
  }

  /** Stops accepting, stops every agent gracefully, closes clients and removes the socket files. */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.tunnel?.close();
    void this.tunnelApi?.then((a) => a.close?.()).catch(() => {});
    this.server?.stopListening();
    this.cluster?.beginClose();
    // The HTTP API answers (/readyz: 503) while the agents stop, then goes before the connections do.
    await this.supervisor.shutdown(this.opts.shutdownGraceMs);
    await this.http?.close();
    this.server?.closeAll();
    // The lease is revoked: this node's names go at once (its restartable agents' definitions stay).
    await this.cluster?.close();
    // After closeAll: every adopted connection is closed already; this joins the reactor thread.
    await this.closeServices();
    await this.sandbox?.close();
    this.log.info('clove kernel stopped');
  }
}

/** The machine token in `file` (its first line), or a start error naming the file. */
function readTokenFile(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new KernelStartError(`cannot read the relay token file ${file}: ${(e as Error).message}`, 2);
  }
  const token = text.split('\n')[0]!.trim();
  if (!token) throw new KernelStartError(`the relay token file ${file} is empty`, 2);
  return token;
}

/** A start error unless `url` is a relay URL the tunnel can dial. */
function checkRelayUrl(url: string): void {
  try {
    tunnelUrl(url);
  } catch (e) {
    throw new KernelStartError(`--relay: ${(e as Error).message}`, 2);
  }
}

/** Asks python3 for its real executable once, off the event loop; null when there is none. */
function resolvePython(): Promise<string | null> {
  if (process.env.CLOVE_PYTHON) return Promise.resolve(process.env.CLOVE_PYTHON);
  return new Promise((resolve) =>
    execFile(
      'python3',
      ['-c', 'import sys; print(sys.executable)'],
      { encoding: 'utf8', timeout: 10_000 },
      (err, out) => resolve(err ? null : out.trim() || null),
    ),
  );
}

/** The CPU quota of the kernel's own cgroup (cgroups.ts cpuQuotaOf), or null: none, or none readable. */
function ownCpuQuota(): number | null {
  try {
    return cpuQuotaOf(detectHostLayout());
  } catch {
    return null;
  }
}
