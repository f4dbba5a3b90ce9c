/**
 * The cluster's two halves, as the kernel sees them (docs/cluster.md): the directory (etcd: who is in
 * the cluster, who owns which name, which ids are whose, what to restart when a node is lost) and the
 * mail bus (NATS JetStream: messages, events and kernel-to-kernel calls between nodes). A kernel without
 * `--cluster` builds neither.
 */

/** `clove kernel --cluster etcd://H:P --nats nats://H:P --node NAME --advertise HOST:PORT`. */
export interface ClusterOptions {
  /** etcd client endpoints, e.g. `http://127.0.0.1:2379` (etcd:// is accepted and means http://). */
  etcd: string[];
  /** NATS servers, e.g. `nats://127.0.0.1:4222`. */
  nats: string[];
  /** This node's name: unique in the cluster, `[A-Za-z0-9_-]{1,64}`. */
  node: string;
  /** Where other nodes and operators reach this node (HOST:PORT; informational until the HTTP API). */
  advertise: string;
  /** The node's etcd lease: names it owns expire this long after it stops renewing them. */
  leaseTtlS: number;
  /** Key prefix in etcd, stream and subject prefix in NATS: several clusters may share the servers. */
  prefix: string;
  /** Limits of the mail stream and its consumers (JetStreamBus); every field has a default. */
  mail?: Partial<MailOptions>;
}

/**
 * The mail stream's limits (`<PREFIX>_MAIL`, file storage, work-queue retention: a message is removed
 * once its owner acknowledged it). The stream refuses new mail beyond a limit (discard new), never
 * drops mail already accepted except past `maxAgeS`.
 */
export interface MailOptions {
  /** Mail waiting for one name (not yet acknowledged by its owner): default 10000. */
  maxPendingPerName: number;
  /** Bytes of all waiting mail in the stream: default 1 GiB. */
  maxBytes: number;
  /** How long mail waits for an owner before it expires: default 7 days. */
  maxAgeS: number;
  /** JetStream drops a second publish of one msgId within this window: default 120 s. */
  duplicateWindowS: number;
  /** A delivered message not acknowledged within this is delivered again (to whoever owns the name): default 30 s. */
  ackWaitS: number;
  /** Redelivery delay when the local mailbox is full (deliver returned false): default 200 ms. */
  fullRetryMs: number;
  /** msgIds remembered per owned name to drop redeliveries of mail already delivered: default 4096. */
  recentIds: number;
}

/** What a node publishes about itself (refreshed every few seconds while it lives). */
export interface NodeInfo {
  node: string;
  advertise: string;
  /** Kernel version. */
  version: string;
  startedAt: number;
  /** Free memory in bytes and idle CPU (0..cores) at the last refresh: placement reads these. */
  freeMemory: number;
  idleCpu: number;
  cores: number;
  /** Supervised agents on this node. */
  agents: number;
  updatedAt: number;
}

/** Who owns a cluster-wide name. */
export interface NameOwner {
  name: string;
  node: string;
  /** The agent's id: unique cluster-wide (each node allocates from its own slot). */
  id: number;
  /** `<name>#<serial>` on its node. */
  identity: string;
}

/**
 * The definition of an agent that must outlive its node (it has a restart policy): stored in etcd,
 * not bound to any lease, removed when the agent is gone for good. `spec` is what the owner's kernel
 * persists for it (kernel/agents/registry.ts PersistedAgent) — opaque to the directory.
 */
export interface ClusterAgentDef {
  name: string;
  node: string;
  spec: unknown;
  /** etcd mod revision: a survivor's takeover is a compare-and-swap on it. */
  revision?: string;
}

export type DirectoryEvent =
  | { type: 'node-joined'; node: NodeInfo }
  | { type: 'node-lost'; node: string }
  /** This node's lease is gone (partition, etcd lost): every name it owned may be someone else's now. */
  | { type: 'lease-lost' }
  | { type: 'name-claimed'; owner: NameOwner }
  | { type: 'name-released'; name: string; node: string };

/** etcd: membership, leases, names, ids, definitions of agents that outlive their node. */
export interface ClusterDirectory {
  readonly node: string;
  /** Joins: grants the node's lease, claims an id slot, publishes NodeInfo, starts the watches. */
  start(): Promise<void>;
  /** Leaves: revokes the lease (its names go at once), stops the watches. */
  close(): Promise<void>;
  /** Cluster-unique agent ids for this node (ids from the node's slots; another slot when one is used up). */
  allocateId(): number;
  /** Every live node, from the watch cache (this one included). */
  nodes(): NodeInfo[];
  /** Who owns `name` now, from the watch cache (undefined: nobody). */
  owner(name: string): NameOwner | undefined;
  /** Who owns agent id `id` (a remote agent's id resolves to its name and node). */
  ownerOfId(id: number): NameOwner | undefined;
  /** Claims `name` for an agent of this node, bound to the node's lease; resolves with the owner after the race (this node's claim, or the winner's). */
  claim(owner: Omit<NameOwner, 'node'>): Promise<NameOwner>;
  /** Gives a name back (only if this node owns it). */
  release(name: string): Promise<void>;
  /** Stores / removes the definition of an agent that must outlive its node. */
  saveDef(def: ClusterAgentDef): Promise<void>;
  dropDef(name: string): Promise<void>;
  /** Definitions whose node is `node`. */
  defsOf(node: string): Promise<ClusterAgentDef[]>;
  /** Moves a lost node's definition to this node (CAS on its revision): true when this node won it. */
  takeOver(def: ClusterAgentDef): Promise<boolean>;
  /**
   * Refreshes this node's NodeInfo now (the directory also does it on a timer). The fields given are
   * kept for later refreshes (e.g. `agents`); free memory, idle CPU and cores are measured at each one.
   */
  publish(info: Partial<Omit<NodeInfo, 'node' | 'updatedAt'>>): Promise<void>;
  /**
   * After `lease-lost`: joins again with a new lease (nodes/<node>, an id slot, NodeInfo). Names are
   * not re-claimed. One attempt: rejects while etcd is unreachable (call it again later).
   */
  rejoin(): Promise<void>;
  on(listener: (e: DirectoryEvent) => void): () => void;
}

/** A message between nodes: the sender as the receiving agent will see it, and the message text byte for byte. */
export interface RemoteMessage {
  /** Destination name (the bus's subject is derived from it). */
  to: string;
  from: number;
  fromName: string | null;
  fromNode: string;
  /** The message's JSON text exactly as the sender's SEND carried it. */
  message: string;
  /** Unique per message (JetStream de-duplicates on it). */
  msgId: string;
  sentAt: number;
}

/** A BROADCAST of an agent, carried to every other node (each delivers it to its local named agents). */
export interface RemoteBroadcast {
  from: number;
  fromName: string | null;
  fromNode: string;
  /** The message's JSON text exactly as the sender's BROADCAST carried it. */
  message: string;
  /** Whether the sender itself receives it (as the BROADCAST said). */
  includeSelf: boolean;
}

/** An event published on one node, seen on every other. */
export interface RemoteEvent {
  type: string;
  data: unknown;
  source: number;
  node: string;
  at: number;
}

/**
 * NATS JetStream: durable mail per destination name, events between nodes, calls between kernels.
 * Mail to a name is consumed by whichever node owns the name now, and acknowledged only once it is in
 * that node's local mailbox: a message accepted for an agent whose node dies is delivered at its new home.
 */
export interface ClusterBus {
  start(): Promise<void>;
  close(): Promise<void>;
  /** Resolves once JetStream has stored the message (then the sender's SEND succeeds). */
  send(msg: RemoteMessage): Promise<void>;
  /**
   * Starts consuming the mail of `name` on this node. `deliver` puts it in the local mailbox: true = done
   * (acknowledged), false = not now (mailbox full: redelivered later). Idempotent.
   */
  own(name: string, deliver: (msg: RemoteMessage) => boolean): Promise<void>;
  /** Stops consuming `name` here (unacknowledged mail stays for its next owner). */
  disown(name: string): Promise<void>;
  publishEvent(e: RemoteEvent): void;
  onEvent(listener: (e: RemoteEvent) => void): () => void;
  /** Carries a BROADCAST to every other node (core NATS: at most once, like events). */
  broadcast(b: RemoteBroadcast): void;
  /** BROADCASTs of other nodes (never this node's own). */
  onBroadcast(listener: (b: RemoteBroadcast) => void): () => void;
  /** Kernel-to-kernel calls (LIST of a remote node, KILL of a remote agent, …): JSON in, JSON out. */
  call(node: string, method: string, args: unknown, timeoutMs?: number): Promise<unknown>;
  serve(handler: (method: string, args: unknown, from: string) => Promise<unknown>): void;
}
