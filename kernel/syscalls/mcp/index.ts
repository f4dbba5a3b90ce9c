/**
 * mcp family: MCP_LIST_TOOLS and MCP_CALL (docs/mcp.md, docs/protocol.md "MCP tool servers"). The
 * operator declares MCP servers (config.ts); the kernel is their MCP client and lets agents list and
 * call the tools their rights grant (service.ts). The SDK is loaded only when a server is first used.
 */
import { defineFamily } from '../../core/family.js';
import { loadConfig } from './config.js';
import { McpService } from './service.js';

export default defineFamily(({ services }) => {
  const cfg = loadConfig(services.kernel.dataDir);
  if (cfg.error) services.log.error({ mcp_config: cfg.source }, cfg.error);
  else if (cfg.servers.length)
    services.log.info(
      {
        mcp_config: cfg.source,
        servers: cfg.servers.map((s) => ({
          name: s.name,
          transport: s.transport,
          ...(s.transport === 'http' ? { url: new URL(s.url).origin } : { command: s.command }),
        })),
      },
      'MCP servers declared',
    );
  const mcp = new McpService(cfg, services);
  return {
    name: 'mcp',
    handlers: {
      MCP_LIST_TOOLS: (ctx, req) => mcp.list(ctx, req),
      MCP_CALL: (ctx, req) => mcp.call(ctx, req),
    },
    close: () => mcp.close(),
  };
});
