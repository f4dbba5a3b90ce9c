// A real MCP server for the mcp family's tests (kernel/syscalls/mcp/mcp.test.ts), written with the
// official SDK: McpServer over stdio (the kernel starts it as declared in mcp.json). Its tools:
// echo, add (structured), pid (which process answers: a restart changes it), fail (a tool error),
// big (a result of N bytes), slow (answers after N ms), crash (the process exits mid-call).
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';

const server = new McpServer({ name: 'clove-test-tools', version: '1.0.0' });
const text = (t) => ({ content: [{ type: 'text', text: t }] });

server.registerTool(
  'echo',
  { description: 'Echoes its text', inputSchema: { text: z.string() } },
  async ({ text: t }) => text(t),
);
server.registerTool(
  'add',
  {
    description: 'Adds two numbers',
    inputSchema: { a: z.number(), b: z.number() },
    outputSchema: { sum: z.number() },
  },
  async ({ a, b }) => ({
    content: [{ type: 'text', text: String(a + b) }],
    structuredContent: { sum: a + b },
  }),
);
server.registerTool('pid', { description: 'The server process id' }, async () => text(String(process.pid)));
server.registerTool('fail', { description: 'Always reports a failure' }, async () => ({
  content: [{ type: 'text', text: 'it did not work' }],
  isError: true,
}));
server.registerTool(
  'big',
  { description: 'A result of `bytes` characters', inputSchema: { bytes: z.number().int() } },
  async ({ bytes }) => text('x'.repeat(bytes)),
);
server.registerTool(
  'slow',
  { description: 'Answers after `ms` milliseconds', inputSchema: { ms: z.number().int() } },
  async ({ ms }) => {
    await sleep(ms);
    return text('done');
  },
);
server.registerTool('crash', { description: 'Exits the process mid-call' }, async () => {
  process.stderr.write('crashing on request\n');
  process.exit(3);
});

await server.connect(new StdioServerTransport());
process.stderr.write(`tool server ${process.pid} ready\n`);
