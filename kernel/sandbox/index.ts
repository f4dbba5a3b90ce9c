/** Public surface of the sandbox (see docs/sandbox.md). */
export { peerCredentials } from './peercred.js';
export { nativeAvailable } from './native.js';
export {
  NativeSpawner,
  processTree,
  type NativeSpawnerOptions,
  type SandboxMode,
  type SandboxedAgent,
} from './spawner.js';
export {
  DEFAULT_LIMITS,
  defaultPolicy,
  resolveLimits,
  resolvePolicy,
  sharesToWeight,
  type SandboxPolicy,
} from './policy.js';
export {
  detectHostLayout,
  type AgentCgroup,
  type CgroupLayout,
  type CgroupRoot,
  type Controller,
  type Hierarchy,
} from './cgroups.js';
export {
  agentCgroupMetrics,
  cgroupMetrics,
  createSystemSampler,
  processMetrics,
  resolveCgroupPath,
  systemMetrics,
  type CgroupMetrics,
  type ProcessMetrics,
  type SystemMetrics,
} from './metrics.js';
export * from './errors.js';
