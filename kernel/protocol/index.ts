export * from './frame.js';
export * from './opcodes.js';
