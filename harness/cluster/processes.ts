/**
 * The quick cluster provider: each node a `clove kernel` child process (bin/clove.js, so `npm run build`
 * first) with its own directory, socket and data dir, beside etcd and NATS as host processes.
 *
 * Faults: kill = SIGKILL of the kernel (its agents die with it: clove-init has PDEATHSIG); pause = SIGSTOP
 * of the kernel process alone — the kernel is not the leader of a process group of its own (it shares the
 * test's), and its agents live in their own sessions and PID namespaces, so they keep running while
 * their kernel is frozen (a hung daemon, not a frozen machine: the Docker provider freezes the whole
 * container); restart = a new kernel process on the same socket and data dir (it restarts its agents).
 */
import { startKernelProcess, tempDir, type KernelProcess } from '../kernel.js';
import {
  startCluster,
  type ClusterHandle,
  type ClusterProvider,
  type ClusterStartOptions,
  type DriverSpec,
  type NodeDriver,
} from './provider.js';

/** One node: successive kernel processes on the same directory. */
class ProcessNode implements NodeDriver {
  private kp: KernelProcess | null = null;
  private paused = false;
  /** stderr of the runs before the current one. */
  private earlier = '';

  constructor(private readonly spec: DriverSpec) {}

  async start(): Promise<void> {
    if (this.kp) this.earlier += this.kp.stderr();
    this.kp = null;
    this.paused = false;
    try {
      this.kp = await startKernelProcess({
        socketPath: this.spec.socketPath,
        dataDir: this.spec.dataDir,
        extra: this.spec.kernelArgs,
        timeoutMs: this.spec.startTimeoutMs,
      });
    } catch (e) {
      throw new Error(`node ${this.spec.name}: kernel did not start: ${(e as Error).message}`, { cause: e });
    }
  }

  private running(): KernelProcess | null {
    const kp = this.kp;
    return kp && kp.child.exitCode === null && kp.child.signalCode === null ? kp : null;
  }

  async kill(): Promise<void> {
    const kp = this.running();
    if (!kp) return;
    await kp.stop('SIGKILL');
    this.paused = false;
  }

  async pause(): Promise<void> {
    const kp = this.running();
    if (!kp) throw new Error(`node ${this.spec.name} is not running: nothing to pause`);
    kp.child.kill('SIGSTOP');
    this.paused = true;
  }

  async resume(): Promise<void> {
    const kp = this.running();
    if (!kp) throw new Error(`node ${this.spec.name} is not running: nothing to resume`);
    kp.child.kill('SIGCONT');
    this.paused = false;
  }

  /** Stops the kernel (SIGTERM, SIGKILL after 10 s), thawing it first; nothing when it is not running. */
  private async halt(): Promise<void> {
    const kp = this.running();
    if (!kp) return;
    if (this.paused) kp.child.kill('SIGCONT');
    const t = setTimeout(() => kp.child.kill('SIGKILL'), 10_000);
    await kp.stop('SIGTERM');
    clearTimeout(t);
  }

  async restart(): Promise<void> {
    await this.halt();
    await this.start();
  }

  async logs(): Promise<string> {
    return this.earlier + (this.kp?.stderr() ?? '');
  }

  async destroy(): Promise<void> {
    await this.halt();
  }
}

export class ProcessProvider implements ClusterProvider {
  readonly kind = 'processes' as const;

  start(opts: ClusterStartOptions): Promise<ClusterHandle> {
    return startCluster(
      opts,
      () => tempDir('clvnode'),
      (spec) => new ProcessNode(spec),
    );
  }
}
