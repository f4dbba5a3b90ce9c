/**
 * The cluster's directory on etcd (docs/cluster.md "etcd"): membership (a lease per node and its
 * NodeInfo), cluster-wide names and ids (claimed with compare-and-swap transactions bound to the lease,
 * so a lost node's names expire instead of being owned twice), id slots, and the definitions of agents
 * that must outlive their node. Reads (nodes(), owner(), ownerOfId()) answer synchronously from caches
 * that one etcd watch keeps current.
 */
import os from 'node:os';
import { Etcd3, EtcdLeaseInvalidError, type IKeyValue, type Lease, type Watcher } from 'etcd3';
import type { Logger } from 'pino';
import type {
  ClusterAgentDef,
  ClusterDirectory,
  ClusterOptions,
  DirectoryEvent,
  NameOwner,
  NodeInfo,
} from './types.js';
import {
  ClusterOptionError,
  DefRevisionMissingError,
  DirectoryClosedError,
  EtcdUnreachableError,
  IdsExhaustedError,
  LeaseLostError,
  NodeNameInUseError,
} from './errors.js';

/** Agent ids are `slot · 2^20 + n`: slots 1..4095, n 1..2^20-1 (the wire's u32 id). */
export const SLOT_BITS = 20;
export const SLOT_SIZE = 2 ** SLOT_BITS;
export const MAX_SLOT = 4095;
const MAX_N = SLOT_SIZE - 1;
/** Claim the next slot in the background once this share of the current one is given out. */
const SPARE_AT = Math.floor(MAX_N * 0.9);
const NODE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export interface EtcdDirectoryDeps {
  log: Logger;
  version: string;
  /** How often NodeInfo is refreshed (default 2000 ms). */
  refreshMs?: number;
  /** Deadline of one etcd request (default 5000 ms): a hung etcd fails requests instead of hanging them. */
  requestTimeoutMs?: number;
  /**
   * When `nodes/<node>` is held at start, wait up to the holder lease's remaining TTL for it to expire
   * (a kernel restarted right after a crash of itself) before refusing (default true).
   */
  waitForStaleNode?: boolean;
}

type State = 'new' | 'starting' | 'joined' | 'lost' | 'closed';

interface Cached<T> {
  value: T;
  rev: number;
}

/** `etcd://h:p` means `http://h:p`; a bare `h:p` too. */
function endpoint(e: string): string {
  if (e.startsWith('etcd://')) return `http://${e.slice('etcd://'.length)}`;
  if (/^[a-z]+:\/\//i.test(e)) return e;
  return `http://${e}`;
}

/** The first key after every key that starts with `prefix` (etcd's range_end for a prefix). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function rev(r: string | number | undefined | null): number {
  return r === undefined || r === null ? 0 : Number(r);
}

/** Idle and total CPU time over all cores since boot (os.cpus), for idle-CPU deltas. */
function cpuTimes(): { idle: number; total: number; cores: number } {
  const cpus = os.cpus();
  let idle = 0;
  let total = 0;
  for (const c of cpus) {
    idle += c.times.idle;
    total += c.times.idle + c.times.user + c.times.nice + c.times.sys + c.times.irq;
  }
  return { idle, total, cores: cpus.length };
}

export class EtcdDirectory implements ClusterDirectory {
  readonly node: string;
  private readonly opts: ClusterOptions;
  private readonly log: Logger;
  private readonly endpoints: string[];
  private readonly root: string;
  private readonly refreshMs: number;
  private readonly requestTimeoutMs: number;
  private readonly waitForStaleNode: boolean;

  private state: State = 'new';
  private client: Etcd3 | null = null;
  private lease: Lease | null = null;
  private leaseId: string | null = null;
  /** Leases this node lost: revoked (best effort) at rejoin so their leftovers go at once. */
  private oldLeases: Lease[] = [];
  /** Send times of keep-alives not yet answered, and when etcd last renewed the lease (lower bound). */
  private keepaliveFires: number[] = [];
  private renewedAt = 0;
  private watcher: Watcher | null = null;
  private watchBroken = false;
  private timers: NodeJS.Timeout[] = [];
  private closing: Promise<void> | null = null;
  private rejoining: Promise<void> | null = null;

  private readonly nodeCache = new Map<string, Cached<NodeInfo>>();
  private readonly nameCache = new Map<string, Cached<NameOwner>>();
  private readonly idIndex = new Map<number, string>();
  /** Keys deleted at a revision: a watch event older than that must not bring them back. */
  private readonly tombstones = new Map<string, number>();
  private readonly listeners = new Set<(e: DirectoryEvent) => void>();

  /** Id slots this node claimed (in order) and the next n of each (kept across a rejoin). */
  private slots: number[] = [];
  private readonly nextN = new Map<number, number>();
  private spareClaim: Promise<void> | null = null;

  private info: Omit<NodeInfo, 'node' | 'updatedAt'>;
  private lastCpu = cpuTimes();

  constructor(opts: ClusterOptions, deps: EtcdDirectoryDeps) {
    if (!NODE_NAME.test(opts.node)) {
      throw new ClusterOptionError('node', `'${opts.node}' is not a node name ([A-Za-z0-9_-]{1,64})`);
    }
    if (opts.etcd.length === 0) throw new ClusterOptionError('etcd', 'no etcd endpoint given');
    if (!Number.isInteger(opts.leaseTtlS) || opts.leaseTtlS < 2) {
      throw new ClusterOptionError('leaseTtlS', `${opts.leaseTtlS} is not a whole number of seconds >= 2`);
    }
    if (!/^[A-Za-z0-9_-]+$/.test(opts.prefix)) {
      throw new ClusterOptionError('prefix', `'${opts.prefix}' is not [A-Za-z0-9_-]+`);
    }
    this.opts = opts;
    this.node = opts.node;
    this.log = deps.log;
    this.endpoints = opts.etcd.map(endpoint);
    this.root = `/${opts.prefix}/`;
    this.refreshMs = deps.refreshMs ?? 2000;
    this.requestTimeoutMs = deps.requestTimeoutMs ?? 5000;
    this.waitForStaleNode = deps.waitForStaleNode ?? true;
    this.info = {
      advertise: opts.advertise,
      version: deps.version,
      startedAt: Date.now(),
      freeMemory: os.freemem(),
      idleCpu: 0,
      cores: this.lastCpu.cores,
      agents: 0,
    };
  }

  private key(rel: string): string {
    return this.root + rel;
  }

  /** The state a caller sees: 'joined' (lease held), 'lost' (rejoin needed), … */
  get status(): State {
    return this.state;
  }

  // ── lifecycle ────────────────────────────────────────────────────────────────────────────

  async start(): Promise<void> {
    if (this.state !== 'new') throw new DirectoryClosedError(this.node, 'start', `already ${this.state}`);
    this.state = 'starting';
    const timeout = this.requestTimeoutMs;
    this.client = new Etcd3({
      hosts: this.endpoints,
      dialTimeout: timeout,
      // Unary calls get a deadline (a paused etcd must fail them); streams (watch, keep-alive) none.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
      // A connection that silently died (a partition drops packets) is found by pings, not by TCP's
      // retransmission timeout of minutes; etcd refuses pings closer than 5 s (--grpc-keepalive-min-time).
      grpcOptions: {
        'grpc.keepalive_time_ms': 6000,
        'grpc.keepalive_timeout_ms': 5000,
        'grpc.keepalive_permit_without_calls': 1,
        // gRPC backs reconnects off up to 2 minutes by default: a healed partition must not wait that long.
        'grpc.initial_reconnect_backoff_ms': 500,
        'grpc.max_reconnect_backoff_ms': 5000,
      },
    });
    try {
      await this.reload();
      this.startWatch();
      await this.join();
    } catch (e) {
      const closedMeanwhile = this.closing !== null;
      this.state = 'closed';
      this.closing ??= this.shutdown(true);
      await this.closing;
      throw closedMeanwhile ? new DirectoryClosedError(this.node, 'start', 'closed') : e;
    }
    // close() while we were joining: it wins (its shutdown revokes what we just took).
    if (this.closing) {
      this.dropLease(true);
      throw new DirectoryClosedError(this.node, 'start', 'closed');
    }
    this.state = 'joined';
    this.timers.push(setInterval(() => void this.refresh(), this.refreshMs));
    this.timers.push(setInterval(() => this.checkLease(), 200));
    this.log.info({ node: this.node, slot: this.slots[0], lease: this.leaseId }, 'joined the cluster');
  }

  /**
   * After lease-lost: grants a new lease, claims `nodes/<node>` and an id slot again (the old slot
   * first, so that ids keep counting) and publishes NodeInfo. Names are not re-claimed: the caller
   * claims again what it still runs. One attempt: throws EtcdUnreachableError while etcd is away.
   */
  rejoin(): Promise<void> {
    if (this.state === 'joined') return Promise.resolve();
    if (this.rejoining) return this.rejoining;
    if (this.state !== 'lost')
      return Promise.reject(new DirectoryClosedError(this.node, 'rejoin', this.state));
    this.rejoining = this.rejoinOnce().finally(() => (this.rejoining = null));
    return this.rejoining;
  }

  private async rejoinOnce(): Promise<void> {
    this.state = 'starting';
    try {
      while (this.oldLeases.length > 0) {
        await this.oldLeases[0].revoke().catch((e: unknown) => {
          throw this.unreachable('revoke the lost lease', e);
        });
        this.oldLeases.shift();
      }
      await this.join();
    } catch (e) {
      if (this.state === 'starting') this.state = 'lost';
      this.dropLease();
      throw this.closing ? new DirectoryClosedError(this.node, 'rejoin', 'closed') : e;
    }
    if (this.closing) {
      this.dropLease(true);
      throw new DirectoryClosedError(this.node, 'rejoin', 'closed');
    }
    this.state = 'joined';
    this.log.info({ node: this.node, slot: this.slots[0], lease: this.leaseId }, 'rejoined the cluster');
    // Names may have moved while we were away: make the caches equal to etcd now (the watch goes on).
    await this.reload().catch((e: unknown) => this.log.warn({ err: e }, 'reload after rejoin failed'));
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.state = 'closed';
      await this.shutdown(true);
    })();
    return this.closing;
  }

  /**
   * Test-only: dies the way a killed kernel does — stops renewing and drops the connection without
   * revoking, so the node's keys stay until its lease expires in etcd.
   */
  async crash(): Promise<void> {
    this.closing ??= (async () => {
      this.state = 'closed';
      await this.shutdown(false);
    })();
    return this.closing;
  }

  private async shutdown(revoke: boolean): Promise<void> {
    for (const t of this.timers.splice(0)) clearInterval(t);
    const w = this.watcher;
    this.watcher = null;
    if (w) await Promise.race([w.cancel().catch(() => undefined), delay(1000)]);
    const lease = this.lease;
    this.lease = null;
    this.leaseId = null;
    if (lease) {
      if (revoke) {
        await lease.revoke().catch((e: unknown) => {
          this.log.warn(
            { err: e, node: this.node },
            'could not revoke the lease: its keys go when it expires',
          );
        });
      } else {
        lease.release();
      }
    }
    for (const old of this.oldLeases.splice(0)) old.release();
    this.client?.close();
    this.client = null;
  }

  /** Grants a lease, claims `nodes/<node>` (refusing a live holder) and an id slot, publishes NodeInfo. */
  private async join(): Promise<void> {
    const client = this.etcd('join');
    const lease = client.lease(this.opts.leaseTtlS);
    this.lease = lease;
    this.keepaliveFires = [];
    const asked = Date.now();
    lease.on('keepaliveFired', () => this.keepaliveFires.push(Date.now()));
    lease.on('keepaliveSucceeded', () => {
      const sent = this.keepaliveFires.shift();
      if (this.lease === lease) this.renewedAt = Math.max(this.renewedAt, sent ?? Date.now());
    });
    lease.on('keepaliveFailed', () => (this.keepaliveFires = []));
    lease.on('lost', (err) => {
      if (this.lease === lease) this.loseLease(`etcd reports the lease lost: ${err.message}`);
    });
    try {
      this.leaseId = await lease.grant();
    } catch (e) {
      this.dropLease();
      throw this.unreachable('grant the node lease', e);
    }
    this.renewedAt = asked;
    await this.claimNodeKey();
    this.slots = [];
    const previous = [...this.nextN.keys()];
    await this.claimSlot(previous);
    await this.putInfo();
  }

  private async claimNodeKey(): Promise<void> {
    const client = this.etcd('join');
    const key = this.key(`nodes/${this.node}`);
    let deadline: number | null = null;
    for (;;) {
      const value = JSON.stringify(this.nodeInfo());
      const res = await client
        .if(key, 'Create', '==', 0)
        .then(client.put(key).value(value).lease(this.leaseId!))
        .else(client.get(key))
        .commit()
        .catch((e: unknown) => {
          throw this.unreachable(`claim ${key}`, e);
        });
      if (res.succeeded) {
        this.applyPut(key, Buffer.from(value), rev(res.header.revision), false);
        return;
      }
      const kv = res.responses[0]?.response_range?.kvs?.[0];
      if (!kv) continue; // gone between compare and read: try again
      if (deadline === null && this.waitForStaleNode) {
        const ttl = await client.leaseClient
          .leaseTimeToLive({ ID: kv.lease })
          .then((r) => Number(r.TTL))
          .catch(() => this.opts.leaseTtlS);
        // etcd reports whole seconds and revokes expired leases in a loop: leave it time to do so.
        deadline = Date.now() + (Math.max(ttl, 0) + 1) * 1000 + 1500;
        this.log.warn({ node: this.node, key, ttl }, 'node name held by a lease: waiting for it to expire');
      }
      if (deadline === null || Date.now() > deadline) {
        let holder: NodeInfo | null = null;
        try {
          holder = JSON.parse(kv.value.toString()) as NodeInfo;
        } catch {
          // unreadable: name the key only
        }
        this.dropLease(true);
        throw new NodeNameInUseError(this.node, key, holder);
      }
      await delay(250);
    }
  }

  /** Claims the lowest free `slots/<k>` (the ones in `prefer` first), bound to the lease. */
  private async claimSlot(prefer: number[]): Promise<number> {
    const client = this.etcd('claim an id slot');
    const leaseId = this.leaseId;
    if (!leaseId) throw new LeaseLostError(this.node, 'claim an id slot');
    const used = new Set(
      (
        await client
          .getAll()
          .prefix(this.key('slots/'))
          .keys()
          .catch((e: unknown) => {
            throw this.unreachable('list the id slots', e);
          })
      ).map((k) => Number(k.slice(this.key('slots/').length))),
    );
    const order = [...prefer.filter((k) => !this.slots.includes(k))];
    for (let k = 1; k <= MAX_SLOT; k++) if (!used.has(k) && !order.includes(k)) order.push(k);
    for (const k of order) {
      if (this.nextN.has(k) && (this.nextN.get(k) ?? 1) > MAX_N) continue;
      const key = this.key(`slots/${k}`);
      const res = await client
        .if(key, 'Create', '==', 0)
        .then(client.put(key).value(this.node).lease(leaseId))
        .commit()
        .catch((e: unknown) => {
          throw this.unreachable(`claim ${key}`, e);
        });
      if (res.succeeded) {
        this.slots.push(k);
        if (!this.nextN.has(k)) this.nextN.set(k, 1);
        return k;
      }
    }
    throw new IdsExhaustedError(this.node, `all ${MAX_SLOT} id slots are taken`);
  }

  // ── the lease ────────────────────────────────────────────────────────────────────────────

  /**
   * Our own watchdog over the keep-alive: etcd3 reports a lost lease only when it can reach etcd again
   * (or after twice the TTL). A lease whose last renewal was *sent* more than a TTL ago may have
   * expired in etcd, and its names be someone else's: report it lost a little before that (a fifth
   * of the TTL, 0.25..2 s).
   */
  private checkLease(): void {
    if (this.state !== 'joined') return;
    const silentMs = Date.now() - this.renewedAt;
    const ttlMs = this.opts.leaseTtlS * 1000;
    // A margin before etcd may expire it, for the kernel to stop what ran under our names.
    const margin = Math.min(Math.max(ttlMs / 5, 250), 2000);
    if (silentMs >= ttlMs - margin) {
      this.loseLease(`no keep-alive answered for ${Math.round(silentMs)} ms (TTL ${this.opts.leaseTtlS} s)`);
    }
  }

  private loseLease(why: string): void {
    if (this.state !== 'joined') return;
    this.state = 'lost';
    this.log.warn({ node: this.node, lease: this.leaseId, why }, 'lost the etcd lease');
    this.dropLease();
    this.spareClaim = null;
    this.emit({ type: 'lease-lost' });
  }

  /** Stops using the current lease (kept for a revoke at rejoin unless `revokeNow`). */
  private dropLease(revokeNow = false): void {
    const lease = this.lease;
    this.lease = null;
    this.leaseId = null;
    if (!lease) return;
    if (revokeNow) {
      lease.revoke().catch(() => undefined);
    } else {
      lease.release();
      this.oldLeases.push(lease);
    }
  }

  // ── NodeInfo ─────────────────────────────────────────────────────────────────────────────

  private nodeInfo(): NodeInfo {
    return { ...this.info, node: this.node, updatedAt: Date.now() };
  }

  /** Measures free memory and idle CPU (cores idle since the last measurement) into `info`. */
  private measure(): void {
    const now = cpuTimes();
    const dTotal = now.total - this.lastCpu.total;
    const dIdle = now.idle - this.lastCpu.idle;
    this.info.idleCpu = dTotal > 0 ? Math.round((dIdle / dTotal) * now.cores * 100) / 100 : this.info.idleCpu;
    this.info.cores = now.cores;
    this.info.freeMemory = os.freemem();
    this.lastCpu = now;
  }

  private async putInfo(): Promise<void> {
    const client = this.etcd('publish NodeInfo');
    const leaseId = this.leaseId;
    if (!leaseId) throw new LeaseLostError(this.node, 'publish NodeInfo');
    this.measure();
    const key = this.key(`nodes/${this.node}`);
    const value = JSON.stringify(this.nodeInfo());
    // Only over our own key: never recreate it after etcd deleted it (the lease is gone then).
    const res = await client
      .if(key, 'Lease', '==', leaseId)
      .then(client.put(key).value(value).lease(leaseId))
      .commit()
      .catch((e: unknown) => {
        throw this.unreachable(`publish ${key}`, e);
      });
    if (!res.succeeded) {
      this.loseLease(`${key} is no longer held by this node's lease`);
      throw new LeaseLostError(this.node, 'publish NodeInfo');
    }
    this.applyPut(key, Buffer.from(value), rev(res.header.revision), false);
  }

  async publish(info: Partial<Omit<NodeInfo, 'node' | 'updatedAt'>>): Promise<void> {
    if (this.state === 'closed' || this.state === 'new') {
      throw new DirectoryClosedError(
        this.node,
        'publish NodeInfo',
        this.state === 'new' ? 'not started' : 'closed',
      );
    }
    this.info = { ...this.info, ...info };
    // Without a lease it is kept for the rejoin.
    if (this.state === 'joined') await this.putInfo();
  }

  private async refresh(): Promise<void> {
    if (this.state !== 'joined') return;
    try {
      await this.putInfo();
    } catch (e) {
      this.log.debug({ err: e, node: this.node }, 'NodeInfo refresh failed');
    }
  }

  // ── ids ──────────────────────────────────────────────────────────────────────────────────

  allocateId(): number {
    this.mustBeJoined('allocate an agent id');
    for (;;) {
      const k = this.slots[0];
      if (k === undefined) throw new IdsExhaustedError(this.node, 'no id slot claimed');
      const n = this.nextN.get(k) ?? 1;
      if (n > MAX_N) {
        if (this.slots.length > 1) {
          this.slots.shift();
          continue;
        }
        this.claimSpare();
        throw new IdsExhaustedError(this.node, `slot ${k} is used up and the next slot is not claimed yet`);
      }
      this.nextN.set(k, n + 1);
      if (n >= SPARE_AT && this.slots.length === 1) this.claimSpare();
      return k * SLOT_SIZE + n;
    }
  }

  /** Claims the next id slot in the background (once at a time). */
  private claimSpare(): void {
    if (this.spareClaim || this.state !== 'joined') return;
    const p = this.claimSlot([])
      .then((k) => this.log.info({ node: this.node, slot: k }, 'claimed the next id slot'))
      .catch((e: unknown) => this.log.warn({ err: e, node: this.node }, 'could not claim the next id slot'))
      .finally(() => {
        if (this.spareClaim === p) this.spareClaim = null;
      });
    this.spareClaim = p;
  }

  /** Test hook: pretends `used` ids of the current slot are given out (to reach a slot's end quickly). */
  skipIds(used: number): void {
    const k = this.slots[0];
    if (k !== undefined) this.nextN.set(k, Math.min((this.nextN.get(k) ?? 1) + used, MAX_N + 1));
  }

  /** The spare slot claim in flight, if any (tests wait on it). */
  spareReady(): Promise<void> {
    return this.spareClaim ?? Promise.resolve();
  }

  // ── names ────────────────────────────────────────────────────────────────────────────────

  nodes(): NodeInfo[] {
    return [...this.nodeCache.values()].map((c) => c.value).sort((a, b) => a.node.localeCompare(b.node));
  }

  owner(name: string): NameOwner | undefined {
    return this.nameCache.get(name)?.value;
  }

  ownerOfId(id: number): NameOwner | undefined {
    const name = this.idIndex.get(id);
    return name === undefined ? undefined : this.nameCache.get(name)?.value;
  }

  /**
   * One transaction: the name is free → it is ours (names/ and ids/ bound to our lease); else read the
   * owner. A name this node already owns under another id (its agent was started again) is rewritten
   * to the new id with a compare-and-swap on its revision.
   */
  async claim(o: Omit<NameOwner, 'node'>): Promise<NameOwner> {
    const what = `claim the name '${o.name}'`;
    this.mustBeJoined(what);
    const client = this.etcd(what);
    const leaseId = this.leaseId!;
    const mine: NameOwner = { name: o.name, node: this.node, id: o.id, identity: o.identity };
    const value = JSON.stringify(mine);
    const nameKey = this.key(`names/${o.name}`);
    const idKey = this.key(`ids/${o.id}`);
    for (let attempt = 0; attempt < 5; attempt++) {
      const res = await client
        .if(nameKey, 'Create', '==', 0)
        .then(client.put(nameKey).value(value).lease(leaseId), client.put(idKey).value(o.name).lease(leaseId))
        .else(client.get(nameKey))
        .commit()
        .catch((e: unknown) => {
          throw this.unreachable(what, e);
        });
      if (res.succeeded) {
        this.applyPut(nameKey, Buffer.from(value), rev(res.header.revision));
        return mine;
      }
      const kv = res.responses[0]?.response_range?.kvs?.[0];
      if (!kv) continue;
      const current = this.parseOwner(kv);
      if (!current) throw new Error(`etcd key ${nameKey} holds no name owner: ${kv.value.toString()}`);
      this.applyPut(nameKey, kv.value, rev(kv.mod_revision));
      if (current.node !== this.node || (current.id === o.id && current.identity === o.identity))
        return current;
      const swapped = await client
        .if(nameKey, 'Mod', '==', kv.mod_revision)
        .then(
          client.put(nameKey).value(value).lease(leaseId),
          client.delete().key(this.key(`ids/${current.id}`)),
          client.put(idKey).value(o.name).lease(leaseId),
        )
        .commit()
        .catch((e: unknown) => {
          throw this.unreachable(what, e);
        });
      if (swapped.succeeded) {
        this.applyPut(nameKey, Buffer.from(value), rev(swapped.header.revision));
        return mine;
      }
    }
    throw this.unreachable(what, new Error('the name kept changing under the claim (5 attempts)'));
  }

  async release(name: string): Promise<void> {
    const what = `release the name '${name}'`;
    const client = this.etcd(what);
    const nameKey = this.key(`names/${name}`);
    for (let attempt = 0; attempt < 5; attempt++) {
      const kv = await this.getKv(nameKey, what);
      if (!kv) return;
      const current = this.parseOwner(kv);
      if (!current || current.node !== this.node) return;
      const res = await client
        .if(nameKey, 'Mod', '==', kv.mod_revision)
        .then(client.delete().key(nameKey), client.delete().key(this.key(`ids/${current.id}`)))
        .commit()
        .catch((e: unknown) => {
          throw this.unreachable(what, e);
        });
      if (res.succeeded) {
        this.applyDelete(nameKey, rev(res.header.revision));
        return;
      }
    }
    throw this.unreachable(what, new Error('the name kept changing under the release (5 attempts)'));
  }

  // ── definitions of agents that outlive their node ────────────────────────────────────────

  async saveDef(def: ClusterAgentDef): Promise<void> {
    const what = `save the definition of '${def.name}'`;
    const client = this.etcd(what);
    const value = JSON.stringify({ name: def.name, node: def.node, spec: def.spec });
    await client
      .put(this.key(`defs/${def.name}`))
      .value(value)
      .exec()
      .catch((e: unknown) => {
        throw this.unreachable(what, e);
      });
  }

  /** Removes the definition only while it is this node's (a survivor may have taken it over). */
  async dropDef(name: string): Promise<void> {
    const what = `drop the definition of '${name}'`;
    const client = this.etcd(what);
    const key = this.key(`defs/${name}`);
    for (let attempt = 0; attempt < 5; attempt++) {
      const kv = await this.getKv(key, what);
      if (!kv) return;
      const def = this.parseDef(kv);
      if (def && def.node !== this.node) return;
      const res = await client
        .if(key, 'Mod', '==', kv.mod_revision)
        .then(client.delete().key(key))
        .commit()
        .catch((e: unknown) => {
          throw this.unreachable(what, e);
        });
      if (res.succeeded) return;
    }
    throw this.unreachable(what, new Error('the definition kept changing (5 attempts)'));
  }

  async defsOf(node: string): Promise<ClusterAgentDef[]> {
    const what = `list the definitions of node '${node}'`;
    const client = this.etcd(what);
    const res = await client
      .getAll()
      .prefix(this.key('defs/'))
      .exec()
      .catch((e: unknown) => {
        throw this.unreachable(what, e);
      });
    const out: ClusterAgentDef[] = [];
    for (const kv of res.kvs) {
      const def = this.parseDef(kv);
      if (def && def.node === node) out.push(def);
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  async takeOver(def: ClusterAgentDef): Promise<boolean> {
    if (!def.revision) throw new DefRevisionMissingError(def.name);
    const what = `take over the definition of '${def.name}'`;
    const client = this.etcd(what);
    const key = this.key(`defs/${def.name}`);
    const value = JSON.stringify({ name: def.name, node: this.node, spec: def.spec });
    const res = await client
      .if(key, 'Mod', '==', def.revision)
      .then(client.put(key).value(value))
      .commit()
      .catch((e: unknown) => {
        throw this.unreachable(what, e);
      });
    return res.succeeded;
  }

  // ── events ───────────────────────────────────────────────────────────────────────────────

  on(listener: (e: DirectoryEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: DirectoryEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(e);
      } catch (err) {
        this.log.error({ err, event: e.type }, 'a cluster directory listener threw');
      }
    }
  }

  // ── caches: one load, one watch ──────────────────────────────────────────────────────────

  /**
   * Reads `nodes/` and `names/` at one revision and makes the caches equal to it, emitting what
   * changed (nothing is emitted on the first load). Keys absent from the snapshot get a tombstone at
   * its revision so that an older watch event cannot bring them back.
   */
  private async reload(): Promise<void> {
    const client = this.etcd('load the cluster directory');
    const range = (rel: string) => {
      const key = Buffer.from(this.key(rel));
      return { request_range: { key, range_end: prefixEnd(key) } };
    };
    const res = await client.kv
      .txn({ compare: [], success: [range('nodes/'), range('names/')], failure: [] })
      .catch((e: unknown) => {
        throw this.unreachable('load the cluster directory', e);
      });
    const at = rev(res.header.revision);
    const emit = this.state !== 'starting' || this.nodeCache.size + this.nameCache.size > 0;
    const seen = new Set<string>();
    for (const op of res.responses) {
      for (const kv of op.response_range?.kvs ?? []) {
        const key = kv.key.toString();
        seen.add(key);
        this.applyPut(key, kv.value, rev(kv.mod_revision), emit);
      }
    }
    for (const name of [...this.nameCache.keys()]) {
      const key = this.key(`names/${name}`);
      if (!seen.has(key)) this.applyDelete(key, at, emit);
    }
    for (const node of [...this.nodeCache.keys()]) {
      const key = this.key(`nodes/${node}`);
      if (!seen.has(key)) this.applyDelete(key, at, emit);
    }
    this.watchFrom = at + 1;
  }

  private watchFrom = 0;

  private startWatch(): void {
    const client = this.etcd('watch the cluster directory');
    const w = client.watch().prefix(this.root).startRevision(String(this.watchFrom)).watcher();
    this.watcher = w;
    w.on('put', (kv) => this.watched(w, kv, false));
    w.on('delete', (kv) => this.watched(w, kv, true));
    w.on('disconnected', (err) => {
      if (this.watcher !== w) return;
      this.watchBroken = true;
      this.log.warn({ err, node: this.node }, 'cluster directory watch disconnected: reconnecting');
    });
    w.on('connected', () => {
      if (this.watcher !== w || !this.watchBroken) return;
      this.watchBroken = false;
      this.reload().catch((e: unknown) => this.log.warn({ err: e }, 'reload after a watch reconnect failed'));
    });
    w.on('error', (err) => {
      // Cancelled by etcd (e.g. compacted past our revision): load everything again and watch anew.
      if (this.watcher !== w) return;
      this.log.warn({ err, node: this.node }, 'cluster directory watch cancelled: reloading');
      this.watcher = null;
      void w.cancel().catch(() => undefined);
      void this.rewatch();
    });
  }

  private async rewatch(): Promise<void> {
    while (this.client) {
      try {
        await this.reload();
        if (this.client) this.startWatch();
        return;
      } catch (e) {
        this.log.warn({ err: e, node: this.node }, 'reload failed: trying again');
        await delay(1000);
      }
    }
  }

  private watched(w: Watcher, kv: IKeyValue, deleted: boolean): void {
    if (this.watcher !== w) return;
    const at = rev(kv.mod_revision);
    for (const [k, r] of this.tombstones) if (r <= at) this.tombstones.delete(k);
    if (deleted) this.applyDelete(kv.key.toString(), at);
    else this.applyPut(kv.key.toString(), kv.value, at);
  }

  /** Applies a put seen at revision `at` to the caches (if newer than what they hold), emitting the change. */
  private applyPut(key: string, value: Buffer, at: number, emit = true): void {
    if ((this.tombstones.get(key) ?? 0) >= at) return;
    const rel = key.slice(this.root.length);
    if (rel.startsWith('nodes/')) {
      const node = rel.slice('nodes/'.length);
      const prev = this.nodeCache.get(node);
      if (prev && prev.rev >= at) return;
      let info: NodeInfo;
      try {
        info = JSON.parse(value.toString()) as NodeInfo;
      } catch {
        this.log.warn({ key }, 'unreadable NodeInfo in etcd: ignored');
        return;
      }
      this.tombstones.delete(key);
      this.nodeCache.set(node, { value: info, rev: at });
      if (!prev && emit && node !== this.node) this.emit({ type: 'node-joined', node: info });
    } else if (rel.startsWith('names/')) {
      const name = rel.slice('names/'.length);
      const prev = this.nameCache.get(name);
      if (prev && prev.rev >= at) return;
      const owner = this.parseOwner({ value, key: Buffer.from(key) } as IKeyValue);
      if (!owner) return;
      this.tombstones.delete(key);
      if (prev && this.idIndex.get(prev.value.id) === name) this.idIndex.delete(prev.value.id);
      this.nameCache.set(name, { value: owner, rev: at });
      this.idIndex.set(owner.id, name);
      const changed = !prev || prev.value.node !== owner.node || prev.value.id !== owner.id;
      if (emit && changed) this.emit({ type: 'name-claimed', owner });
    }
  }

  /** Applies a delete seen at revision `at`, emitting node-lost / name-released (our own key: lease-lost). */
  private applyDelete(key: string, at: number, emit = true): void {
    const rel = key.slice(this.root.length);
    if (rel.startsWith('nodes/')) {
      const node = rel.slice('nodes/'.length);
      const prev = this.nodeCache.get(node);
      if (!prev || prev.rev >= at) return;
      this.nodeCache.delete(node);
      this.tombstones.set(key, at);
      if (node === this.node) {
        if (this.state === 'joined') this.loseLease(`etcd deleted ${key}`);
      } else if (emit) {
        this.emit({ type: 'node-lost', node });
      }
    } else if (rel.startsWith('names/')) {
      const name = rel.slice('names/'.length);
      const prev = this.nameCache.get(name);
      if (!prev || prev.rev >= at) return;
      this.nameCache.delete(name);
      if (this.idIndex.get(prev.value.id) === name) this.idIndex.delete(prev.value.id);
      this.tombstones.set(key, at);
      if (emit) this.emit({ type: 'name-released', name, node: prev.value.node });
    }
  }

  // ── helpers ──────────────────────────────────────────────────────────────────────────────

  private etcd(what: string): Etcd3 {
    if (!this.client) {
      throw new DirectoryClosedError(this.node, what, this.state === 'new' ? 'not started' : 'closed');
    }
    return this.client;
  }

  private mustBeJoined(what: string): void {
    if (this.state === 'joined') return;
    if (this.state === 'lost') throw new LeaseLostError(this.node, what);
    throw new DirectoryClosedError(this.node, what, this.state === 'new' ? 'not started' : this.state);
  }

  /** What a failed etcd request means: our lease unknown to etcd is a lost lease, the rest etcd away. */
  private unreachable(what: string, e: unknown): Error {
    if (e instanceof EtcdUnreachableError || e instanceof DirectoryClosedError || e instanceof LeaseLostError)
      return e;
    if (this.closing) return new DirectoryClosedError(this.node, what, 'closed');
    if (e instanceof EtcdLeaseInvalidError) {
      this.loseLease(`etcd no longer knows the lease (${what})`);
      return new LeaseLostError(this.node, what);
    }
    return new EtcdUnreachableError(this.endpoints, what, e);
  }

  private async getKv(key: string, what: string): Promise<IKeyValue | undefined> {
    const res = await this.etcd(what)
      .get(key)
      .exec()
      .catch((e: unknown) => {
        throw this.unreachable(what, e);
      });
    return res.kvs[0];
  }

  private parseOwner(kv: IKeyValue): NameOwner | null {
    try {
      const o = JSON.parse(kv.value.toString()) as NameOwner;
      if (typeof o.name === 'string' && typeof o.node === 'string' && typeof o.id === 'number') return o;
    } catch {
      // below
    }
    this.log.warn({ key: kv.key.toString() }, 'unreadable name owner in etcd: ignored');
    return null;
  }

  private parseDef(kv: IKeyValue): ClusterAgentDef | null {
    try {
      const d = JSON.parse(kv.value.toString()) as ClusterAgentDef;
      if (typeof d.name === 'string' && typeof d.node === 'string') {
        return { name: d.name, node: d.node, spec: d.spec, revision: String(kv.mod_revision) };
      }
    } catch {
      // below
    }
    this.log.warn({ key: kv.key.toString() }, 'unreadable agent definition in etcd: ignored');
    return null;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
