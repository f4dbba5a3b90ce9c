/** Public surface of the sandbox layer (see docs/sandbox.md). */
export { peerCredentials } from './peercred.js';
export { nativeAvailable } from './native.js';
export {
  NativeSpawner,
  processTree,
  type NativeSpawnerOptions,
  type SandboxMode as NativeMode,
  type SandboxedAgent,
} from './native-spawner.js';
export { PlainSpawner } from './plain-spawner.js';
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
export type * from './types.js';
export * from './errors.js';
