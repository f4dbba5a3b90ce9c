/** Public surface of the sandbox (see docs/sandbox.md). */
export { peerCredentials } from './peercred.js';
export { nativeAvailable } from './native.js';
export * from './errors.js';
