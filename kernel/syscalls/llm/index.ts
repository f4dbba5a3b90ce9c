/**
 * llm family (issue 10; streams and tool turns, issue 16): THINK, THINK_STREAM (+ _NEXT, _CANCEL) and
 * LLM_REPORT. The kernel makes language-model calls for agents with the operator's providers and keys
 * (config.ts: where they are configured), schedules them fairly between agents (scheduler.ts), speaks
 * each provider's API (providers.ts), keeps streamed answers for their callers (streams.ts) and counts
 * the provider's own usage figures against the caller's `llm` quota (service.ts). docs/protocol.md
 * "THINK" is the reference.
 */
import { Op } from '../../../protocol/index.js';
import { acceptAsync, defineFamily } from '../../core/family.js';
import { loadConfig } from './config.js';
import { LlmService } from './service.js';

export default defineFamily(({ services }) => {
  const cfg = loadConfig(services.kernel.dataDir);
  if (cfg.error) services.log.error({ llm_config: cfg.source }, cfg.error);
  else if (cfg.providers.length)
    services.log.info(
      {
        llm_config: cfg.source,
        providers: cfg.providers.map((p) => ({ name: p.name, kind: p.kind, base_url: p.baseUrl })),
      },
      'LLM providers configured',
    );
  for (const p of cfg.providers) {
    const u = new URL(p.baseUrl);
    const local = ['localhost', '127.0.0.1', '[::1]'].includes(u.hostname);
    if (p.apiKey && u.protocol === 'http:' && !local)
      services.log.warn({ provider: p.name }, 'LLM provider key sent over plain http to a remote host');
  }
  const llm = new LlmService(cfg, services);
  return {
    name: 'llm',
    handlers: {
      THINK: (ctx, req) => {
        if (req.async)
          return acceptAsync(ctx, { code: Op.THINK, name: 'THINK' }, req.request_id, (signal) =>
            llm.think({ caller: ctx.caller, signal }, req),
          );
        return llm.think(ctx, req);
      },
      THINK_STREAM: (ctx, req) => llm.thinkStream(ctx, req),
      THINK_STREAM_NEXT: (ctx, req) => llm.streamNext(ctx, req.stream_id, req.wait_ms),
      THINK_STREAM_CANCEL: (ctx, req) => llm.streamCancel(ctx.caller, req.stream_id),
      LLM_REPORT: (ctx, req) => llm.report(ctx.caller, req.tokens),
    },
    close: () => llm.close(),
  };
});
