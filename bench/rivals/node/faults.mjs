// The faults agent a2 injects from inside its work tool, shared by the bare LangGraph.js workload
// (langgraph_workload.mjs) and its ring members under Clove (clove_member.mjs). Same kinds as
// bench/rivals/python/common.py.
import { spawn } from 'node:child_process';

const BOMB = `const {spawn}=require('node:child_process');for(;;){try{spawn(process.execPath,['-e',process.argv[1]],{stdio:'ignore'}).on('error',()=>{})}catch(e){}}`;

export async function inject(kind, agent) {
  switch (kind) {
    case 'sigkill':
      process.kill(process.pid, 'SIGKILL');
      break;
    case 'segfault':
      process.kill(process.pid, 'SIGSEGV');
      break; // no null-deref possible from pure JS
    case 'exception':
      throw new Error(`injected fault: unhandled exception in agent ${agent}`);
    case 'hang':
      // never-resolving promise; the interval stands for the stuck socket/timer a real hang holds
      // (without any pending handle Node would simply exit when the loop drains)
      setInterval(() => {}, 1 << 30);
      await new Promise(() => {});
      break;
    case 'cpu':
      for (;;) {} // eslint-disable-line no-empty
    case 'forkbomb':
      // bounded by the pids cgroup (pids.max=64) and the memory cgroup run.py puts us in
      for (;;) {
        try {
          spawn(process.execPath, ['-e', BOMB, BOMB], { stdio: 'ignore' }).on('error', () => {});
        } catch (e) {
          /* EAGAIN */
        }
      }
    default:
      throw new Error(`unknown fault ${kind}`);
  }
}
