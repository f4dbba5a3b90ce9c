// A LangGraph.js graph run as a Clove agent, for sdk/typescript/integrations/langgraph.test.ts. It uses
// the compiled SDK (`npm run build`) and reports what it does to the operator whose id is REPORT_TO.
//
// MODE=react: a ReAct agent (createReactAgent) with ChatClove and the exec and http Clove tools; reports
//   the messages of the run.
// MODE=resume: a three-step StateGraph (plan: a THINK, work: waits for a `go` message, finish) with a
//   CloveSaver; on start it resumes the thread from its checkpoint when one is left unfinished.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const dist = (p) => pathToFileURL(path.join(root, 'dist', p)).href;
const { CloveClient } = await import(dist('sdk/typescript/client.js'));
const { ChatClove, CloveSaver, cloveTools } = await import(dist('sdk/typescript/integrations/langgraph.js'));
const { Annotation, END, START, StateGraph } = await import('@langchain/langgraph');
const { createReactAgent } = await import('@langchain/langgraph/prebuilt');
const { HumanMessage } = await import('@langchain/core/messages');

const client = await CloveClient.connect();
const REPORT_TO = Number(process.env.REPORT_TO);
const report = (event, data = {}) => client.send(REPORT_TO, { event, ...data });

async function react() {
  const agent = createReactAgent({
    llm: new ChatClove({ client }),
    tools: cloveTools({ client, only: ['exec', 'http'] }),
  });
  const out = await agent.invoke({ messages: [new HumanMessage('react: compute, then fetch')] });
  await report('react-done', {
    messages: out.messages.map((m) => ({
      type: m.type,
      content: m.content,
      tool_calls: m.tool_calls,
      status: m.status,
      usage: m.usage_metadata,
    })),
  });
  // Stays up until the test has read its counters (an ended agent's are gone) and kills it.
  await client.recv({ max: 1, timeoutMs: 300_000 });
}

/** Takes messages until a `go` comes (the test sends it once it has seen this step start). */
async function waitForGo() {
  for (;;) {
    const r = await client.recv({ max: 1, timeoutMs: 60_000 });
    if (r.messages.some((m) => m.message && m.message.go)) return;
  }
}

async function resume() {
  const State = Annotation.Root({
    topic: Annotation(),
    outline: Annotation(),
    steps: Annotation({ reducer: (a, b) => a.concat(b), default: () => [] }),
  });
  const model = new ChatClove({ client });
  const graph = new StateGraph(State)
    .addNode('plan', async (s) => {
      const answer = await model.invoke([new HumanMessage(`resume: plan ${s.topic}`)]);
      await report('plan', { content: answer.content });
      return { outline: answer.content, steps: ['plan'] };
    })
    .addNode('work', async () => {
      await report('work-start');
      await waitForGo();
      await report('work-done');
      return { steps: ['work'] };
    })
    .addNode('finish', async () => {
      await report('finish');
      return { steps: ['finish'] };
    })
    .addEdge(START, 'plan')
    .addEdge('plan', 'work')
    .addEdge('work', 'finish')
    .addEdge('finish', END)
    .compile({ checkpointer: new CloveSaver({ client }) });
  // Every step's checkpoint is stored before the next step starts: a kill loses at most the step it hits.
  const config = { configurable: { thread_id: 'job-1' }, durability: 'sync' };
  const state = await graph.getState(config);
  const resumed = state.next.length > 0;
  await report('start', { resumed, next: state.next, steps: state.values.steps ?? [] });
  const final = await graph.invoke(resumed ? null : { topic: 'the moon' }, config);
  await report('done', { state: final });
  // Stays up until the test has read its restarts and counters (an ended agent leaves the table) and kills it.
  await client.recv({ max: 1, timeoutMs: 300_000 });
}

try {
  if (process.env.MODE === 'react') await react();
  else await resume();
  client.close();
} catch (e) {
  await report('error', { error: String(e && e.stack ? e.stack : e) }).catch(() => {});
  process.exit(1);
}
