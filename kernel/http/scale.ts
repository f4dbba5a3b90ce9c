/**
 * Server-side scale of a clove.yaml service (the kernel has no SCALE opcode; `clove scale` does the same
 * from the CLI, cli/commands/compose.ts): a service is the agents labelled clove.project/clove.service,
 * replica N is named `<service>-N` and labelled clove.replica=N. Scaling up spawns the missing replicas
 * from the SPAWN request an existing replica was started with (the agents service keeps it), with the
 * next replica's name and labels; scaling down stops the highest replicas first. Every step is a
 * syscall as the API's operator (SPAWN, KILL), so rights, audit and the cluster router apply.
 */
import type { AgentInfo, SpawnArgs } from '../../protocol/index.js';
import { LABEL, type ApiDeps, type ScaleResult } from './api.js';
import { ApiError } from './errors.js';

export interface SpawnTemplates {
  /** The SPAWN request the agent `id` was started with, if it is known. */
  spawnRequestOf(id: number): SpawnArgs | undefined;
}

const DEAD = new Set(['STOPPED', 'FAILED']);

function replicaOf(a: AgentInfo): number {
  const n = Number(a.labels?.[LABEL.replica]);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

export function makeScale(call: ApiDeps['call'], templates: SpawnTemplates): NonNullable<ApiDeps['scale']> {
  return async (project, service, replicas, signal): Promise<ScaleResult> => {
    // Every node's replicas (a kernel without --cluster lists its own).
    const list = (await call('LIST', { all_nodes: true }, signal)) as AgentInfo[];
    const mine = list.filter(
      (a) => a.labels?.[LABEL.project] === project && a.labels?.[LABEL.service] === service,
    );
    if (!mine.length)
      throw new ApiError(
        'invalid_state',
        `no replica of ${project}/${service} is left to copy (no agent has its labels): start it with clove up`,
        { project, service },
      );
    if (mine.some((a) => replicaOf(a) === 0))
      throw new ApiError(
        'invalid_state',
        `${project}/${service} is not replicated (give it \`replicas:\` in its clove.yaml and run clove up)`,
      );
    const alive = mine.filter((a) => !DEAD.has(a.state));
    const want = new Set(Array.from({ length: replicas }, (_, i) => `${service}-${i + 1}`));
    const stopped: string[] = [];
    // Highest replica first, as `clove scale` does.
    for (const a of alive.filter((x) => !want.has(x.name)).sort((x, y) => replicaOf(y) - replicaOf(x))) {
      await call('KILL', { id: a.id }, signal);
      stopped.push(a.name);
    }
    const have = new Set(alive.map((a) => a.name));
    const missing = [...want].filter((n) => !have.has(n));
    const started: string[] = [];
    if (missing.length) {
      // The newest replica's request is the template (a dead one's too: its definition is kept).
      const template = [...mine]
        .sort((x, y) => replicaOf(y) - replicaOf(x))
        .map((a) => templates.spawnRequestOf(a.id))
        .find((t) => t !== undefined);
      if (!template)
        throw new ApiError(
          'invalid_state',
          `${project}/${service} has no replica left to copy: start it again with clove up`,
          { project, service },
        );
      for (const name of missing) {
        const i = Number(name.slice(service.length + 1));
        const labels = { ...(template.labels ?? {}), [LABEL.replica]: String(i) };
        await call('SPAWN', { ...template, name, labels }, signal);
        started.push(name);
      }
    }
    return { project, service, replicas, started, stopped };
  };
}
