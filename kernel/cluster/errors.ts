/**
 * Typed errors of the cluster's directory (etcd). They never go on the wire as they are: the kernel's
 * cluster service turns them into a start failure or a syscall error. One class per condition the
 * kernel must tell apart; every class has a stable `code` so callers can switch on it without
 * `instanceof` across module copies (the way kernel/sandbox/errors.ts does it).
 */

export class ClusterError extends Error {
  readonly code: string;
  constructor(message: string, code: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ClusterError';
    this.code = code;
  }
}

/** A cluster option is malformed (node name, endpoint, TTL): nothing was contacted. */
export class ClusterOptionError extends ClusterError {
  readonly option: string;
  constructor(option: string, message: string) {
    super(`cluster option ${option}: ${message}`, 'EOPTION');
    this.name = 'ClusterOptionError';
    this.option = option;
  }
}

/** etcd did not answer (at start, at rejoin, or for one request); `endpoints` says where we looked. */
export class EtcdUnreachableError extends ClusterError {
  readonly endpoints: string[];
  constructor(endpoints: string[], what: string, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(`etcd at ${endpoints.join(', ')} did not answer (${what}): ${why}`, 'EETCD', { cause });
    this.name = 'EtcdUnreachableError';
    this.endpoints = endpoints;
  }
}

/** Another live kernel holds `nodes/<node>`: two kernels were started with one --node name. */
export class NodeNameInUseError extends ClusterError {
  readonly node: string;
  constructor(node: string, key: string, holder: NodeInfoLike | null) {
    const who = holder
      ? ` (advertise ${holder.advertise}, started ${new Date(holder.startedAt).toISOString()})`
      : '';
    super(
      `node name '${node}' is in use by another live kernel${who}: etcd key ${key} is held by a lease that is still renewed; give this kernel another --node name`,
      'ENODEINUSE',
    );
    this.name = 'NodeNameInUseError';
    this.node = node;
  }
}

/** This node's lease is gone (etcd unreachable past the TTL, or expired): call rejoin() before claiming. */
export class LeaseLostError extends ClusterError {
  readonly node: string;
  constructor(node: string, what: string) {
    super(`cannot ${what}: node '${node}' lost its etcd lease (rejoin first)`, 'ELEASELOST');
    this.name = 'LeaseLostError';
    this.node = node;
  }
}

/** The directory is not started yet, or closed. */
export class DirectoryClosedError extends ClusterError {
  constructor(node: string, what: string, state: string) {
    super(`cannot ${what}: the cluster directory of node '${node}' is ${state}`, 'ECLOSED');
    this.name = 'DirectoryClosedError';
  }
}

/** No agent id is ready: the node's id slot is used up and no next slot could be claimed (yet). */
export class IdsExhaustedError extends ClusterError {
  constructor(node: string, why: string) {
    super(`node '${node}' has no cluster agent id left: ${why}`, 'ENOIDS');
    this.name = 'IdsExhaustedError';
  }
}

/** takeOver() was given a definition without the etcd revision its compare-and-swap needs. */
export class DefRevisionMissingError extends ClusterError {
  constructor(name: string) {
    super(`takeOver of '${name}': the definition has no revision (take it from defsOf())`, 'EDEFREV');
    this.name = 'DefRevisionMissingError';
  }
}

interface NodeInfoLike {
  advertise: string;
  startedAt: number;
}
