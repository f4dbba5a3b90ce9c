/**
 * The Docker cluster provider (dockerode): each node a container of the locally built node image
 * (image.ts) running `clove kernel`, on host networking (so its 127.0.0.x address, etcd and NATS on
 * 127.0.0.1 and the harness's iptables rules are the host's), with the node's directory bind-mounted at
 * the same path: the host reaches the kernel's operator socket, and a script written there is at the same
 * path for the kernel. etcd and NATS run as host processes (harness/services.ts).
 *
 * What a node container is granted, and why: the kernel sandboxes its agents itself (clone3 with new
 * PID, mount, UTS, IPC and network namespaces, idmapped mounts, setuid to per-agent uids, cgroups,
 * seccomp), so it needs what a root kernel on a machine has:
 * - every capability this host can grant (`--privileged` when the bounding set is full; here, where the
 *   machine itself lacks CAP_SYS_RESOURCE and runc refuses --privileged, `CapAdd: ALL` minus the missing);
 * - `seccomp=unconfined`, `apparmor=unconfined`: Docker's default profile forbids clone3 namespaces and
 *   mount calls; no masked or read-only /proc and /sys paths (the kernel writes /proc/self/…);
 * - /sys/fs/cgroup bind-mounted read-write: the container's own is read-only without --privileged, and
 *   the kernel creates one cgroup per agent below its own (cgroup namespace: the host's, as on v1).
 * Containers carry the labels `clove.harness` (the cluster), `clove.harness.pid` (the owning test process)
 * and `clove.harness.dir`; stop() removes them, and every start first removes leftovers whose owning
 * process is gone (a run killed before its stop()).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import Docker from 'dockerode';
import { tempDir, waitForSocket } from '../kernel.js';
import {
  ensureNodeImage,
  HARNESS_LABEL,
  IMAGE_PROJECT_DIR,
  pruneNodeImages,
  type NodeImage,
} from './image.js';
import {
  startCluster,
  type ClusterHandle,
  type ClusterProvider,
  type ClusterStartOptions,
  type DriverSpec,
  type NodeDriver,
} from './provider.js';

/** Capability names by number (linux/capability.h), for the CapDrop of what this host cannot grant. */
const CAPS = [
  'CHOWN',
  'DAC_OVERRIDE',
  'DAC_READ_SEARCH',
  'FOWNER',
  'FSETID',
  'KILL',
  'SETGID',
  'SETUID',
  'SETPCAP',
  'LINUX_IMMUTABLE',
  'NET_BIND_SERVICE',
  'NET_BROADCAST',
  'NET_ADMIN',
  'NET_RAW',
  'IPC_LOCK',
  'IPC_OWNER',
  'SYS_MODULE',
  'SYS_RAWIO',
  'SYS_CHROOT',
  'SYS_PTRACE',
  'SYS_PACCT',
  'SYS_ADMIN',
  'SYS_BOOT',
  'SYS_NICE',
  'SYS_RESOURCE',
  'SYS_TIME',
  'SYS_TTY_CONFIG',
  'MKNOD',
  'LEASE',
  'AUDIT_WRITE',
  'AUDIT_CONTROL',
  'SETFCAP',
  'MAC_OVERRIDE',
  'MAC_ADMIN',
  'SYSLOG',
  'WAKE_ALARM',
  'BLOCK_SUSPEND',
  'AUDIT_READ',
  'PERFMON',
  'BPF',
  'CHECKPOINT_RESTORE',
];

/** Capabilities in this process's bounding set that a container cannot get (none on an ordinary host). */
export function missingCaps(): string[] {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status);
  if (!m) return [];
  const bnd = BigInt(`0x${m[1]}`);
  return CAPS.filter((_, i) => (bnd & (1n << BigInt(i))) === 0n);
}

/** Why Docker cannot be used here (null: it answers). */
export async function dockerUnavailable(docker = new Docker()): Promise<string | null> {
  try {
    await docker.ping();
    return null;
  } catch (e) {
    return `docker does not answer on ${(docker.modem as { socketPath?: string }).socketPath ?? 'its socket'} (run ci/docker.sh): ${(e as Error).message}`;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes harness containers whose owning test process is gone, and their directories; returns their names. */
export async function sweepContainers(docker: Docker): Promise<string[]> {
  const list = await docker.listContainers({
    all: true,
    filters: JSON.stringify({ label: [HARNESS_LABEL] }),
  });
  const removed: string[] = [];
  for (const c of list) {
    const pid = Number(c.Labels[`${HARNESS_LABEL}.pid`]);
    if (Number.isInteger(pid) && pid > 0 && alive(pid)) continue;
    await docker
      .getContainer(c.Id)
      .remove({ force: true })
      .catch(() => undefined);
    const dir = c.Labels[`${HARNESS_LABEL}.dir`];
    if (dir?.startsWith('/tmp/')) fs.rmSync(dir, { recursive: true, force: true });
    removed.push(...c.Names);
  }
  return removed;
}

/** A node's container: created once, started, killed, paused, restarted, removed at the end. */
class ContainerNode implements NodeDriver {
  private container: Docker.Container | null = null;
  private paused = false;

  constructor(
    private readonly docker: Docker,
    private readonly image: NodeImage,
    private readonly cluster: string,
    private readonly spec: DriverSpec,
  ) {}

  private get c(): Docker.Container {
    if (!this.container) throw new Error(`node ${this.spec.name} has no container`);
    return this.container;
  }

  async start(): Promise<void> {
    const s = this.spec;
    const missing = missingCaps();
    const hostConfig: Docker.HostConfig & { CgroupnsMode?: string } = {
      NetworkMode: 'host',
      Binds: [`${s.dir}:${s.dir}`, `${s.sharedDir}:${s.sharedDir}`, '/sys/fs/cgroup:/sys/fs/cgroup:rw'],
      SecurityOpt: ['seccomp=unconfined', 'apparmor=unconfined'],
      // What the CLI's `--security-opt systempaths=unconfined` becomes: nothing of /proc and /sys masked.
      MaskedPaths: [],
      ReadonlyPaths: [],
      ...(missing.length ? { CapAdd: ['ALL'], CapDrop: missing } : { Privileged: true }),
      // The host's cgroup namespace (Docker's default on v1, not on v2; @types/dockerode lacks the field).
      CgroupnsMode: 'host',
    };
    this.container = await this.docker.createContainer({
      name: `clove-${this.cluster}-${s.name}`,
      Image: this.image.tag,
      Cmd: [
        'node',
        `${IMAGE_PROJECT_DIR}/bin/clove.js`,
        '--socket',
        s.socketPath,
        'kernel',
        '--data-dir',
        s.dataDir,
        ...s.kernelArgs,
      ],
      Hostname: s.name,
      Labels: {
        [HARNESS_LABEL]: this.cluster,
        [`${HARNESS_LABEL}.pid`]: String(process.pid),
        [`${HARNESS_LABEL}.node`]: s.name,
        [`${HARNESS_LABEL}.dir`]: s.dir,
      },
      HostConfig: hostConfig,
    });
    await this.c.start();
    await this.waitReady();
  }

  /** Waits until the kernel listens; fails early (with its logs) when the container stops first. */
  private async waitReady(): Promise<void> {
    const exited = this.c.wait().then(() => undefined);
    try {
      await waitForSocket(this.spec.socketPath, this.spec.startTimeoutMs, exited);
    } catch (e) {
      throw new Error(
        `node ${this.spec.name}: ${(e as Error).message}\n${await this.logs().catch(() => '')}`,
        {
          cause: e,
        },
      );
    }
  }

  async kill(): Promise<void> {
    const st = await this.c.inspect();
    if (!st.State.Running) return;
    // A paused container takes SIGKILL too (the freezer lets fatal signals through).
    await this.c.kill({ signal: 'SIGKILL' });
    await this.c.wait();
    this.paused = false;
  }

  async pause(): Promise<void> {
    await this.c.pause();
    this.paused = true;
  }

  async resume(): Promise<void> {
    await this.c.unpause();
    this.paused = false;
  }

  async restart(): Promise<void> {
    if (this.paused) await this.resume();
    await this.c.restart({ t: 10 });
    await this.waitReady();
  }

  async logs(): Promise<string> {
    const raw = (await this.c.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer;
    // No TTY: the logs come multiplexed (8-byte frame headers); docker-modem's demuxer splits them.
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (d: Buffer) => chunks.push(d));
    const src = Readable.from([raw]);
    await new Promise<void>((res, rej) => {
      src.once('end', res);
      src.once('error', rej);
      this.docker.modem.demuxStream(src, out, out);
    });
    return Buffer.concat(chunks).toString();
  }

  async destroy(): Promise<void> {
    if (!this.container) return;
    const c = this.container;
    this.container = null;
    try {
      if (this.paused) await c.unpause().catch(() => undefined);
      await c.stop({ t: 10 }).catch(() => undefined);
    } finally {
      await c.remove({ force: true });
    }
  }
}

export class DockerProvider implements ClusterProvider {
  readonly kind = 'docker' as const;
  readonly docker: Docker;
  private image: NodeImage | null = null;

  private readonly root: string | undefined;

  /** `root`: the checkout whose build the nodes run (default: this one). */
  constructor(opts: { docker?: Docker; root?: string } = {}) {
    this.docker = opts.docker ?? new Docker();
    this.root = opts.root;
  }

  /** The node image (built once per provider, and once per content across runs: image.ts). */
  async ensureImage(): Promise<NodeImage> {
    if (!this.image) {
      this.image = await ensureNodeImage(this.docker, { root: this.root });
      // A new build leaves the previous ones unused (~400 MB a base): images no container uses go.
      if (this.image.builtBase || this.image.builtProject) await pruneNodeImages(this.docker, this.image);
    }
    return this.image;
  }

  async start(opts: ClusterStartOptions): Promise<ClusterHandle> {
    const why = await dockerUnavailable(this.docker);
    if (why) throw new Error(why);
    await sweepContainers(this.docker);
    const image = await this.ensureImage();
    // Unique even when two test files share a process (vitest threads): containers are named after it.
    const cluster = `${process.pid}-${randomBytes(4).toString('hex')}`;
    return startCluster(
      opts,
      () => tempDir('clvdock'),
      (spec) => new ContainerNode(this.docker, image, cluster, spec),
    );
  }
}
