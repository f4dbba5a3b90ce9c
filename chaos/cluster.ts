/**
 * Chaos across nodes (issue 13 §5; docs/cluster.md "Chaos across nodes"): a swarm spread over a cluster
 * of N kernels (harness/clusterswarm.ts), then a node-level fault after the warm-up — `kill-node`: k
 * nodes are killed (kernel and agents die at once); `partition`: one node is isolated from etcd, NATS
 * and the other nodes for longer than the lease TTL, then rejoined. Verified: the faulted nodes' agents
 * run again on survivors under the same names and serve; the other agents are undisturbed; no name is
 * ever provably RUNNING on two nodes at once (OwnerWatch); no acknowledged message is lost except those
 * docs/cluster.md "Limits" allows (in the memory of the faulted node at the fault: counted apart).
 * runClusterChaos never exits the process and always stops the cluster.
 */
import { ClusterSwarm, OwnerWatch, type DoubleOwner, type ProviderKind } from '../harness/clusterswarm.js';
import { until } from '../harness/kernel.js';
import { mulberry32, sample, sleep, summarize, type Summary } from '../harness/timing.js';
import type { AgentInfo } from '../sdk/typescript/client.js';
import { disturbance, machine, warmUp, type Machine } from './run.js';

export type ClusterFault = 'kill-node' | 'partition';

export type ClusterPhase =
  | 'starting'
  | 'spawning'
  | 'warm-up'
  | 'injecting'
  | 'taking over'
  | 'rejoining'
  | 'draining'
  | 'verifying'
  | 'done';

export interface ClusterChaosOptions {
  nodes: number;
  agents: number;
  fault: ClusterFault;
  /** kill-node: how many nodes are killed (never the first: it holds the collector). */
  killNodes?: number;
  provider?: ProviderKind;
  /** Seconds a silent node keeps its names (the kernels' --lease-ttl). */
  leaseTtlS?: number;
  /** Minimum seconds of traffic (a third before the fault). */
  durationS: number;
  seed: number;
  intervalMs?: number;
  nodeEvery?: number;
  sandbox?: 'auto' | 'native' | 'off';
  fastPath?: boolean;
  /** Node i's address is `${addressPrefix}${10 + i}` (default from this process's pid). */
  addressPrefix?: string;
  /**
   * A message to an agent of the faulted node counts as possibly in that node's memory at the fault
   * (docs/cluster.md Limits) when the collector learned of it no later than this after the fault: its
   * sender's report may arrive that much after the kernel accepted it. Default 2000 ms.
   */
  reportSlackMs?: number;
  /**
   * The bus's ack wait (docs/cluster.md, `ackWaitS`, 30 s): mail a faulted node had taken from JetStream
   * without acknowledging it goes to the new owner after it, so the drain waits that long for mail to
   * victims before counting it lost.
   */
  ackWaitS?: number;
  timeoutS?: number;
  onTick?: (v: ClusterLiveView) => void;
  log?: (line: string) => void;
}

export interface ClusterLiveView {
  phase: ClusterPhase;
  elapsedMs: number;
  nodes: { name: string; status: 'live' | 'killed' | 'isolated' | 'rejoined'; collector: boolean }[];
  /** Each agent with the node it runs on now (its home node until LIST says otherwise). */
  agents: {
    name: string;
    node: string;
    home: string;
    state: string;
    victim: boolean;
    moved: boolean;
    serving: boolean;
    runtime: string;
  }[];
  sent: number;
  delivered: number;
  victims: number;
  rescheduled: number;
  doubleOwners: number;
}

export interface MovedAgent {
  name: string;
  from: string;
  to: string | null;
  /** From the fault to the agent's first accepted SEND in its new life (as the collector saw it). */
  takeover_ms: number | null;
}

export interface ClusterChaosResult {
  ok: boolean;
  failures: string[];
  provider: ProviderKind;
  fault: ClusterFault;
  nodes: number;
  node_names: string[];
  collector_node: string;
  faulted_nodes: string[];
  lease_ttl_s: number;
  agents: number;
  runtimes: { python: number; node: number };
  seed: number;
  /** Agents on the faulted nodes at the fault. */
  victims: number;
  /** Victims RUNNING again on a survivor under the same name, and serving. */
  rescheduled: number;
  not_rescheduled: string[];
  moved: MovedAgent[];
  survivors: number;
  survivors_undisturbed: number;
  disturbed: { name: string; why: string }[];
  messages_sent: number;
  messages_delivered: number;
  /** Acknowledged and never received, outside what docs/cluster.md Limits allows: must be 0. */
  messages_lost: number;
  lost_sample: string[];
  /**
   * Never received, to an agent of the faulted node, and acknowledged into that node's memory: sent
   * before the fault (its report seen within report_slack_ms of it), or between two of its agents. The
   * node's in-memory mailboxes (or an isolated agent's receipts it could no longer report) went with the
   * fault: docs/cluster.md "Limits".
   */
  messages_lost_with_node: number;
  lost_with_node_sample: string[];
  duplicates_redelivered: number;
  /** Mail to victims that arrived only after the ack wait (held unacknowledged by the faulted node). */
  delivered_after_ack_wait: number;
  /** SENDs refused not_found while a victim's name had no owner (between lease loss and takeover). */
  sends_refused_not_found: number;
  /**
   * SENDs refused not_found before the fault, to a peer that had come up at most report_slack_ms before:
   * its name had not reached the sender's node yet (the directory's watch; docs/cluster.md "Limits").
   */
  sends_refused_at_start: number;
  /** Errors the victims' faulted lives reported (e.g. cluster_unavailable while isolated). */
  victim_errors_before_takeover: number;
  owner_samples: number;
  double_owners: DoubleOwner[];
  takeover_ms: Summary;
  /** Every "lost the etcd lease" a kernel logged (ms after the fault): expected only on an isolated node. */
  lease_losses: { node: string; at_ms: number; why: string }[];
  /** partition: the isolated node is alive in the cluster again, holding none of its old names. */
  rejoined: boolean | null;
  report_slack_ms: number;
  duration_s: number;
  machine: Machine;
}

/** The data message keys' parts: `${src}@${epoch}>${dst}#${n}`. */
function keyParts(k: string): { src: string; epoch: string; dst: string } {
  const at = k.indexOf('@');
  const gt = k.indexOf('>', at);
  return { src: k.slice(0, at), epoch: k.slice(at + 1, gt), dst: k.slice(gt + 1, k.lastIndexOf('#')) };
}

export async function runClusterChaos(o: ClusterChaosOptions): Promise<ClusterChaosResult> {
  const started = Date.now();
  const log = o.log ?? (() => {});
  const timeoutMs = (o.timeoutS ?? 180) * 1000;
  const leaseTtlS = o.leaseTtlS ?? 3;
  const slackMs = o.reportSlackMs ?? 2000;
  const provider = o.provider ?? 'processes';
  const killNodes = o.fault === 'kill-node' ? (o.killNodes ?? 1) : 1;
  if (o.nodes < 2) throw new Error(`a cluster chaos run needs at least 2 nodes (got ${o.nodes})`);
  if (killNodes < 1 || killNodes > o.nodes - 1)
    throw new Error(`cannot fault ${killNodes} of ${o.nodes} nodes: the collector's node must survive`);
  if (o.agents < o.nodes) throw new Error(`${o.agents} agents cannot spread over ${o.nodes} nodes`);
  let phase: ClusterPhase = 'starting';
  const setPhase = (p: ClusterPhase) => {
    phase = p;
    log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${p}`);
  };
  setPhase('starting');

  const flags = ['--lease-ttl', String(leaseTtlS), '--log-level', 'warn', '--mailbox-size', '1000000'];
  if (o.sandbox) flags.push('--sandbox', o.sandbox);
  if (o.fastPath) flags.push('--fast-path');
  const cs = await ClusterSwarm.start({
    nodes: o.nodes,
    provider,
    addressPrefix: o.addressPrefix ?? `127.0.${1 + (process.pid % 250)}.`,
    kernelFlags: flags,
    agents: o.agents,
    intervalMs: o.intervalMs ?? 500,
    nodeEvery: o.nodeEvery,
  });
  const swarm = cs.swarm;
  const nodeNames = cs.nodes.map((n) => n.name);
  const collectorNode = nodeNames[0];
  const home = new Map(swarm.names.map((n, i) => [n, cs.homeOf(i).name]));
  const faulted = sample(nodeNames.slice(1), killNodes, mulberry32(o.seed));
  const status = new Map<string, ClusterLiveView['nodes'][number]['status']>(
    nodeNames.map((n) => [n, 'live']),
  );
  const victims = swarm.names.filter((n) => faulted.includes(home.get(n)!));
  const victimSet = new Set(victims);
  const survivors = swarm.names.filter((n) => !victimSet.has(n));
  const watch = new OwnerWatch(
    cs.nodes.map((n, i) => ({ name: n.name, client: cs.operators[i] })),
    (n) => status.get(n) !== 'killed',
  );
  const epochBefore = new Map<string, string>();
  const servingAt = new Map<string, number>();
  let t0 = 0;
  let ticker: NodeJS.Timeout | undefined;
  let tick = () => {};
  log(
    `nodes ${nodeNames.join(' ')} (${provider}); collector on ${collectorNode}; ${o.fault}: ${faulted.join(' ')}`,
  );

  /** Where a victim runs now, if RUNNING somewhere other than its faulted home. */
  const newHome = (a: AgentInfo | undefined) =>
    a && a.state === 'RUNNING' && a.node && !faulted.includes(a.node) ? a.node : null;
  /** Victims serving in a life after the one the fault hit (nothing before the fault). */
  const resolveServing = () => {
    if (!t0) return false;
    for (const v of victims) {
      const before = epochBefore.get(v);
      if (servingAt.has(v) || before === undefined) continue;
      const at = swarm.servingAfter(v, before);
      if (at !== undefined) servingAt.set(v, at);
    }
    return victims.every((v) => servingAt.has(v));
  };

  try {
    if (o.onTick) {
      tick = () => {
        const cur = watch.current((n) => status.get(n) === 'live' || status.get(n) === 'rejoined');
        resolveServing();
        const agents = swarm.names.map((n, i) => {
          const a = cur.get(n);
          return {
            name: n,
            node: a?.node ?? home.get(n)!,
            home: home.get(n)!,
            state: a?.state ?? (swarm.tracks.get(n)?.pid ? 'STOPPED' : 'PENDING'),
            victim: victimSet.has(n),
            moved: !!a?.node && a.node !== home.get(n),
            serving: servingAt.has(n),
            runtime: swarm.runtimeOf(i),
          };
        });
        o.onTick!({
          phase,
          elapsedMs: Date.now() - started,
          nodes: nodeNames.map((n) => ({ name: n, status: status.get(n)!, collector: n === collectorNode })),
          agents,
          sent: swarm.sentKeys.size,
          delivered: swarm.recvKeys.size,
          victims: t0 ? victims.length : 0,
          rescheduled: servingAt.size,
          doubleOwners: watch.doubles().length,
        });
      };
      ticker = setInterval(tick, 250);
      tick();
    }
    // Each sample is a LIST all_nodes on every node (3 LISTs each): fewer of them for a big swarm.
    watch.start(Math.max(300, o.agents * 5));

    setPhase('spawning');
    await cs.spawnAll();
    await swarm.waitUp(timeoutMs);

    setPhase('warm-up');
    const trafficStart = await warmUp(swarm, timeoutMs, o.durationS);

    setPhase('injecting');
    const before = await swarm.listByName();
    const misplaced = swarm.names.filter((n) => before.get(n)?.node !== home.get(n));
    if (misplaced.length)
      throw new Error(`agents not on their home node before the fault: ${misplaced.join(' ')}`);
    for (const v of victims) epochBefore.set(v, swarm.currentEpoch(v) ?? '');
    const countsAtFault = swarm.counts();
    t0 = Date.now();
    if (o.fault === 'kill-node') {
      await Promise.all(
        faulted.map(async (n) => {
          await cs.cluster.node(n).kill();
          status.set(n, 'killed');
        }),
      );
    } else {
      await cs.cluster.isolate(faulted[0]);
      status.set(faulted[0], 'isolated');
    }
    log(`${o.fault} ${faulted.join(' ')}: ${victims.length} agents there`);
    // Mail to the victims while their node is gone: it must reach them at their new home.
    for (let k = 0; k < 3; k++) for (const v of victims) await swarm.sendData(v);

    setPhase('taking over');
    const takenOver = until(
      async () => {
        if (!resolveServing()) return false;
        const now = await swarm.listByName();
        return victims.every((v) => newHome(now.get(v)) !== null);
      },
      timeoutMs,
      `every agent of ${faulted.join(', ')} running and serving on a survivor`,
    ).catch((e: Error) => e);
    const active = swarm.waitTraffic(timeoutMs, survivors, countsAtFault).catch((e: Error) => e);
    const [tk, act] = await Promise.all([takenOver, active]);

    let rejoined: boolean | null = null;
    let rejoinErr: Error | null = null;
    if (o.fault === 'partition') {
      setPhase('rejoining');
      const isolated = faulted[0];
      // Longer than the lease TTL in any case (the takeover itself needs the lease to have expired).
      await sleep(Math.max(0, leaseTtlS * 1000 * 2 - (Date.now() - t0)));
      await cs.cluster.rejoin(isolated);
      status.set(isolated, 'rejoined');
      const ops = cs.operators[nodeNames.indexOf(isolated)];
      rejoinErr = await until(
        async () => {
          const seen = (await cs.operators[0].clusterNodes()).nodes.some(
            (n) => n.node === isolated && n.alive,
          );
          const st = await ops.clusterStatus().catch(() => null);
          const mine = (await ops.list()).filter((a) => victimSet.has(a.name) && a.state === 'RUNNING');
          return seen && st?.nodes_alive === o.nodes && mine.length === 0;
        },
        timeoutMs,
        `${isolated} alive in the cluster again with none of its old agents running`,
      ).then(
        () => null,
        (e: Error) => e,
      );
      rejoined = rejoinErr === null;
    }
    await sleep(Math.max(0, o.durationS * 1000 - (Date.now() - trafficStart)));

    setPhase('draining');
    const stopErr = await swarm.stopTraffic(timeoutMs).then(
      () => null,
      (e: Error) => e,
    );
    let acct = await swarm.drain(timeoutMs);
    const toVictims = () => swarm.accounting().lost.filter((k) => victimSet.has(keyParts(k).dst)).length;
    const heldBefore = toVictims();
    const redeliverBy = Math.min(t0 + (o.ackWaitS ?? 30) * 1000 + 10_000, Date.now() + timeoutMs);
    if (heldBefore > 0 && Date.now() < redeliverBy) {
      log(`${heldBefore} messages to the faulted node's agents not received yet: waiting for the ack wait`);
      await until(() => toVictims() === 0 || Date.now() > redeliverBy, timeoutMs, 'redeliveries');
      acct = swarm.accounting();
    }
    const afterAckWait = heldBefore - toVictims();
    resolveServing();

    setPhase('verifying');
    for (const n of cs.nodes)
      if (status.get(n.name) !== 'killed')
        await watch.sample(n.name, cs.operators[nodeNames.indexOf(n.name)]);
    watch.stop();
    const after = await swarm.listByName();
    const failures: string[] = [];
    if (tk instanceof Error) failures.push(`takeover: ${tk.message}`);
    if (act instanceof Error) failures.push(`survivor traffic: ${act.message}`);
    if (rejoinErr) failures.push(`rejoin: ${rejoinErr.message}`);
    if (stopErr) failures.push(`stop: ${stopErr.message}`);

    // Errors: a SEND to a victim refused not_found while its name had no owner is the documented gap.
    let refused = 0;
    let refusedAtStart = 0;
    let victimErrors = 0;
    const firstUp = (n: string): number | undefined => swarm.track(n).upAt[0];
    const otherErrors = new Map<string, string[]>();
    for (const n of swarm.names) {
      for (const e of swarm.track(n).errors) {
        const oldLife = victimSet.has(n) && e.e === epochBefore.get(n);
        if (oldLife) victimErrors++;
        else if (e.op === 'send' && e.code === 'not_found' && victimSet.has(String(e.dst))) refused++;
        else if (
          e.op === 'send' &&
          e.code === 'not_found' &&
          typeof e.at === 'number' &&
          e.at < t0 &&
          e.at <= (firstUp(String(e.dst)) ?? Infinity) + slackMs
        )
          refusedAtStart++;
        else otherErrors.set(n, [...(otherErrors.get(n) ?? []), `${e.op} ${e.code}`]);
      }
    }

    const disturbed: { name: string; why: string }[] = [];
    for (const n of survivors) {
      const a = after.get(n);
      const why = disturbance(
        swarm.track(n),
        a,
        before.get(n)?.pid,
        countsAtFault.get(n),
        otherErrors.get(n),
      );
      if (a && a.node !== home.get(n)) why.push(`moved ${home.get(n)} -> ${a.node}`);
      if (why.length) disturbed.push({ name: n, why: why.join('; ') });
    }
    for (const d of disturbed) failures.push(`survivor ${d.name} disturbed: ${d.why}`);

    const moved: MovedAgent[] = [];
    const notRescheduled: string[] = [];
    for (const v of victims) {
      const a = after.get(v);
      const to = newHome(a);
      const at = servingAt.get(v);
      moved.push({
        name: v,
        from: home.get(v)!,
        to,
        takeover_ms: at === undefined ? null : Math.max(0, at - t0),
      });
      if (!to || at === undefined) {
        notRescheduled.push(v);
        failures.push(
          `${v} of ${home.get(v)} not back on a survivor: ${a ? `${a.state} on ${a.node}` : 'not listed'}, serving ${at !== undefined}`,
        );
      }
      const errs = otherErrors.get(v);
      if (errs) failures.push(`${v} reported errors after the takeover: ${[...new Set(errs)].join(',')}`);
    }

    // A node that was not faulted losing its lease (an overloaded machine for the TTL) explains the rest.
    const leaseLosses: ClusterChaosResult['lease_losses'] = [];
    for (const n of cs.nodes) {
      const text = await n.logs().catch(() => '');
      for (const line of text.split('\n')) {
        if (!line.includes('lost the etcd lease')) continue;
        try {
          const j = JSON.parse(line) as { time?: number; why?: string };
          leaseLosses.push({ node: n.name, at_ms: (j.time ?? NaN) - t0, why: j.why ?? '' });
        } catch {
          // Not a pino line.
        }
      }
    }
    for (const l of leaseLosses)
      if (o.fault !== 'partition' || l.node !== faulted[0])
        failures.push(
          `${l.node} lost its lease ${l.at_ms} ms after the fault without being faulted (${l.why}): too loaded for --lease-ttl ${leaseTtlS}?`,
        );

    const doubles = watch.doubles();
    for (const d of doubles)
      failures.push(
        `${d.name} RUNNING on two nodes at once (${d.lives.map((l) => `${l.node} pid ${l.pid}`).join(', ')}) for ${d.overlap_ms} ms`,
      );

    // Losses: in the faulted node's memory at the fault (docs/cluster.md Limits) or real.
    const withNode: string[] = [];
    const lost: string[] = [];
    for (const k of acct.lost) {
      const { src, epoch, dst } = keyParts(k);
      const at = swarm.sentAt.get(k) ?? Infinity;
      // Between two agents of the faulted node: local mail, only ever in that node's memory.
      const local = victimSet.has(src) && epochBefore.get(src) === epoch;
      if (victimSet.has(dst) && (local || at <= t0 + slackMs)) withNode.push(k);
      else lost.push(k);
    }
    const withTime = (k: string) => `${k} (reported ${(swarm.sentAt.get(k) ?? NaN) - t0} ms after the fault)`;
    if (lost.length)
      failures.push(
        `${lost.length} acknowledged messages lost (e.g. ${lost.slice(0, 3).map(withTime).join(', ')})`,
      );
    if (acct.sent < 1) failures.push('no message was sent');

    const runtimes = { python: 0, node: 0 };
    for (let i = 0; i < swarm.names.length; i++) runtimes[swarm.runtimeOf(i)]++;
    const latencies = moved.flatMap((m) => (m.takeover_ms === null ? [] : [m.takeover_ms]));

    setPhase('done');
    tick(); // the last frame: phase done
    return {
      ok: failures.length === 0,
      failures,
      provider,
      fault: o.fault,
      nodes: o.nodes,
      node_names: nodeNames,
      collector_node: collectorNode,
      faulted_nodes: faulted,
      lease_ttl_s: leaseTtlS,
      agents: o.agents,
      runtimes,
      seed: o.seed,
      victims: victims.length,
      rescheduled: victims.length - notRescheduled.length,
      not_rescheduled: notRescheduled,
      moved,
      survivors: survivors.length,
      survivors_undisturbed: survivors.length - disturbed.length,
      disturbed,
      messages_sent: acct.sent,
      messages_delivered: acct.delivered,
      messages_lost: lost.length,
      lost_sample: lost.slice(0, 10).map(withTime),
      messages_lost_with_node: withNode.length,
      lost_with_node_sample: withNode.slice(0, 10).map(withTime),
      duplicates_redelivered: acct.duplicates,
      delivered_after_ack_wait: afterAckWait,
      sends_refused_not_found: refused,
      sends_refused_at_start: refusedAtStart,
      victim_errors_before_takeover: victimErrors,
      owner_samples: watch.samples,
      double_owners: doubles,
      takeover_ms: summarize(latencies),
      lease_losses: leaseLosses,
      rejoined,
      report_slack_ms: slackMs,
      duration_s: Math.round((Date.now() - started) / 100) / 10,
      machine: machine(),
    };
  } finally {
    if (ticker) clearInterval(ticker);
    watch.stop();
    await cs.close();
  }
}
