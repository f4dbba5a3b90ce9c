// LangGraph.js ring of agents driven by @langchain/core's FakeListChatModel.
// Same workload and JSON-lines protocol as bench/rivals/python/common.py:
// a0 -> a1 -> a2 -> a3 -> a4 -> (a0 | END); each node asks its fake chat model, then runs
// its `work` tool (an @langchain/core `tool()`, async user code) on the item in the state.
// Compiled with defaults (no checkpointer, no retryPolicy), invoked once.
import { createRequire } from 'node:module';
import { StateGraph, Annotation, END, START } from '@langchain/langgraph';
import { FakeListChatModel } from '@langchain/core/utils/testing';
import { HumanMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { z } from 'zod';
import { inject } from './faults.mjs';

const require = createRequire(import.meta.url);
const env = process.env;
const FAULT = env.RIVALS_FAULT || 'none';
const N = Number(env.RIVALS_AGENTS || 5);
const FAULT_AGENT = `a${Number(env.RIVALS_FAULT_AGENT || 2)}`;
const FAULT_AT = Number(env.RIVALS_FAULT_AT || 3);
const DURATION = Number(env.RIVALS_DURATION || 10);
const WORK_MS = Number(env.RIVALS_WORK_MS || 20);
const LEAK_STEP = 32 << 20;
const AGENTS = Array.from({ length: N }, (_, i) => `a${i}`);

function emit(obj) {
  // synchronous write to fd 1 so a SIGKILL right after loses nothing already reported
  require('node:fs').writeSync(1, JSON.stringify({ ...obj, t: obj.t ?? Date.now() / 1000 }) + '\n');
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const next = (a) => AGENTS[(AGENTS.indexOf(a) + 1) % N];

const ledger = {
  item: 0,
  holder: AGENTS[0],
  counts: Object.fromEntries(AGENTS.map((a) => [a, 0])),
  fired: false,
  leaked: [],
  t0: 0,
};
const elapsed = () => Date.now() / 1000 - ledger.t0;

async function work(agent) {
  if (FAULT !== 'none' && agent === FAULT_AGENT && elapsed() >= FAULT_AT) {
    if (FAULT === 'leak') {
      if (!ledger.fired) {
        emit({ ev: 'fault', agent, kind: FAULT });
        ledger.fired = true;
      }
      ledger.leaked.push(Buffer.alloc(LEAK_STEP, 1));
    } else if (!(ledger.fired && FAULT === 'exception')) {
      ledger.fired = true;
      emit({ ev: 'fault', agent, kind: FAULT });
      await inject(FAULT, agent);
    }
  }
  const item = ledger.item;
  await sleep(WORK_MS);
  ledger.counts[agent] += 1;
  emit({ ev: 'progress', agent, n: ledger.counts[agent], item, holder: ledger.holder });
  ledger.item = item + 1;
  ledger.holder = next(agent);
  return `${agent} finished item ${item}; item ${item + 1} goes to ${ledger.holder}`;
}

function makeAgent(name) {
  const model = new FakeListChatModel({ responses: [`${name}: call work`] }); // cycles
  const workTool = tool(async () => work(name), {
    name: `work_${name}`,
    description: 'do one unit of work',
    schema: z.object({}),
  });
  return async (state) => {
    await model.invoke([new HumanMessage(`${state.last} -> you hold item ${state.item}`)]);
    const out = await workTool.invoke({});
    return { item: ledger.item, last: out };
  };
}

const State = Annotation.Root({ item: Annotation(), last: Annotation() });
const g = new StateGraph(State);
for (const a of AGENTS) g.addNode(a, makeAgent(a));
g.addEdge(START, AGENTS[0]);
for (let i = 0; i + 1 < N; i++) g.addEdge(AGENTS[i], AGENTS[i + 1]);
g.addConditionalEdges(AGENTS[N - 1], () => (elapsed() >= DURATION ? END : AGENTS[0]));
const graph = g.compile();

const version = require('@langchain/langgraph/package.json').version;
ledger.t0 = Date.now() / 1000;
emit({
  ev: 'start',
  framework: 'langgraph-js',
  version,
  fault: FAULT,
  fault_agent: FAULT_AGENT,
  agents: AGENTS,
  duration: DURATION,
  fault_at: FAULT_AT,
  pid: process.pid,
});
await graph.invoke({ item: 0, last: 'start' }, { recursionLimit: 10_000_000 });
emit({ ev: 'end', counts: ledger.counts });
