// One LangGraph.js ring member as its own Clove agent (bench/rivals/run.py, "LangGraph.js under Clove").
// Same ring, work and JSON lines as langgraph_workload.mjs, and the same protocol as
// bench/rivals/python/clove_member.py: this member's turn is a one-node StateGraph (START -> node -> END)
// built like the bare workload's nodes (FakeListChatModel + a tool() doing the work); the item arrives as a
// message {item, holder, counts, t0} taken under a RECV lease (redelivered to the restarted member if this
// one dies during its turn), is handed on with SEND and acknowledged by the next RECV. The fault fires once
// per case (a2 notes it in its agent-scoped key first). The framework is imported after HELLO, with a
// heartbeat running (below), so the watchdog only ever judges the member's turns.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { CloveClient } from '../../../dist/sdk/typescript/client.js';
import { inject } from './faults.mjs';

const env = process.env;
const NAME = env.CLOVE_AGENT_NAME;
const FAULT = env.RIVALS_FAULT || 'none';
const N = Number(env.RIVALS_AGENTS || 5);
const FAULT_AGENT = `a${Number(env.RIVALS_FAULT_AGENT || 2)}`;
const FAULT_AT = Number(env.RIVALS_FAULT_AT || 3);
const DURATION = Number(env.RIVALS_DURATION || 10);
const WORK_MS = Number(env.RIVALS_WORK_MS || 20);
const LEAK_STEP = 32 << 20;
const AGENTS = Array.from({ length: N }, (_, i) => `a${i}`);
const NEXT = AGENTS[(AGENTS.indexOf(NAME) + 1) % N];
const FIRED_KEY = 'rivals/fault-fired';

function emit(obj) {
  // synchronous write to fd 1 (the agent's log) so a SIGKILL right after loses nothing already reported
  fs.writeSync(1, JSON.stringify({ ...obj, t: obj.t ?? Date.now() / 1000 }) + '\n');
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// HEARTBEAT every 0.5 s while the framework loads, from a child process (it is in the agent's process tree,
// so it speaks for the agent; module evaluation blocks this process's own timers). It ends when its stdin
// closes: when this process stops it, or dies.
const HEART = `const { CloveClient } = await import(process.argv[1]);
process.stdin.on('end', () => process.exit(0)).resume();
const c = await CloveClient.connect({ reconnect: false });
for (;;) { await c.heartbeat(); await new Promise((r) => setTimeout(r, 500)); }`;
const SDK_URL = new URL('../../../dist/sdk/typescript/client.js', import.meta.url).href;
const beat = spawn(process.execPath, ['--input-type=module', '-e', HEART, SDK_URL], {
  stdio: ['pipe', 'ignore', 'inherit'],
});
const client = await CloveClient.connect({ reconnect: false });
await client.hello();
const { StateGraph, Annotation, END, START } = await import('@langchain/langgraph');
const { FakeListChatModel } = await import('@langchain/core/utils/testing');
const { HumanMessage } = await import('@langchain/core/messages');
const { tool } = await import('@langchain/core/tools');
const { z } = await import('zod');

const firedBefore = (await client.fetch(FIRED_KEY, 'agent')).exists === true;
const ledger = { item: 0, holder: NAME, counts: {}, t0: 0, fired: false, leaked: [] };
const elapsed = () => Date.now() / 1000 - ledger.t0;

// langgraph_workload.mjs's work(), with the fault once per case
async function work(agent) {
  if (FAULT !== 'none' && agent === FAULT_AGENT && !firedBefore && elapsed() >= FAULT_AT) {
    if (!ledger.fired) await client.store(FIRED_KEY, true, { scope: 'agent' });
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
  ledger.holder = NEXT;
  return `${agent} finished item ${item}; item ${item + 1} goes to ${ledger.holder}`;
}

// langgraph_workload.mjs's makeAgent(), alone in its graph
const model = new FakeListChatModel({ responses: [`${NAME}: call work`] });
const workTool = tool(async () => work(NAME), {
  name: `work_${NAME}`,
  description: 'do one unit of work',
  schema: z.object({}),
});
const State = Annotation.Root({ item: Annotation(), last: Annotation() });
const graph = new StateGraph(State)
  .addNode(NAME, async (state) => {
    await model.invoke([new HumanMessage(`${state.last} -> you hold item ${state.item}`)]);
    const out = await workTool.invoke({});
    return { item: ledger.item, last: out };
  })
  .addEdge(START, NAME)
  .addEdge(NAME, END)
  .compile();

emit({ ev: 'ready', agent: NAME, pid: process.pid });
if (beat.exitCode === null && beat.signalCode === null) {
  await new Promise((resolve) => {
    beat.once('exit', resolve);
    beat.stdin.end();
  });
}

for (;;) {
  const r = await client.recv({ max: 1, timeoutMs: 30_000, lease: true });
  for (const m of r.messages) {
    const token = m.message;
    ledger.item = token.item;
    ledger.holder = token.holder;
    ledger.counts = Object.fromEntries(AGENTS.map((a) => [a, Number(token.counts[a] ?? 0)]));
    ledger.t0 = token.t0;
    if (elapsed() >= DURATION) {
      emit({ ev: 'end', counts: ledger.counts });
    } else {
      await graph.invoke({ item: ledger.item, last: `item ${ledger.item} for ${NAME}` });
      await client.send(NEXT, {
        item: ledger.item,
        holder: ledger.holder,
        counts: ledger.counts,
        t0: ledger.t0,
      });
    }
    await client.recv({ max: 0 }); // acknowledge: the item is handed on
  }
}
