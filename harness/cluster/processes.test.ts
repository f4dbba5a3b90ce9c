/** The processes provider: two `clove kernel` child processes beside real etcd and NATS (provider-suite.ts). */
import { ProcessProvider } from './processes.js';
import { describeProvider } from './provider-suite.js';

describeProvider('processes', () => new ProcessProvider(), {
  addresses: ['127.0.0.12', '127.0.0.13'],
  skip: null,
});
