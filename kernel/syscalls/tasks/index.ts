/**
 * Tasks family: TASK_CREATE, TASK_ASSIGN, TASK_STATUS, TASK_COMPLETE, TASK_LIST (docs/protocol.md,
 * "Tasks"). The service (service.ts) keeps the tasks, tells assignees and creators, and reassigns the
 * subtasks of agents that exit or miss their deadline.
 */
import { defineFamily } from '../../core/family.js';
import { TaskService } from './service.js';

export default defineFamily(({ services }) => {
  const tasks = new TaskService(services);
  return {
    name: 'tasks',
    handlers: {
      TASK_CREATE: ({ caller }, req) => {
        const task = tasks.create(caller, req);
        return { success: true, id: task.id, task };
      },
      TASK_ASSIGN: ({ caller }, req) => ({ success: true, ...tasks.assign(caller, req) }),
      TASK_STATUS: ({ caller }, req) => {
        const task = tasks.status(caller, req.task_id);
        return { success: true, task, status: task.status, results: task.results };
      },
      TASK_COMPLETE: ({ caller }, req) => ({ success: true, ...tasks.complete(caller, req) }),
      TASK_LIST: ({ caller }, req) => {
        const list = tasks.list(caller, req);
        return { success: true, tasks: list, count: list.length };
      },
    },
    close: () => tasks.close(),
  };
});
