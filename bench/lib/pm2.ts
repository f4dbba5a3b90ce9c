/**
 * PM2 as the rival supervisor for the restart benchmark: the pinned devDependency
 * (node_modules/.bin/pm2), with PM2_HOME in a temporary directory so that it never touches a user's
 * PM2, and `pm2 kill` at the end (its daemon is ours alone).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../kernel/config.js';

const run = promisify(execFile);
export const PM2_BIN = path.join(REPO_ROOT, 'node_modules', '.bin', 'pm2');

export class Pm2 {
  constructor(readonly home: string) {
    fs.mkdirSync(home, { recursive: true });
  }

  async cmd(...args: string[]): Promise<string> {
    const { stdout } = await run(PM2_BIN, args, {
      env: { ...process.env, PM2_HOME: this.home },
      timeout: 60_000,
    });
    return stdout;
  }

  async version(): Promise<string> {
    return (await this.cmd('--version')).trim().split('\n').pop() ?? '';
  }

  /** Starts one app from an ecosystem file written to PM2_HOME. */
  async start(app: Record<string, unknown>): Promise<void> {
    const file = path.join(this.home, 'apps.json');
    fs.writeFileSync(file, JSON.stringify({ apps: [app] }, null, 2));
    await this.cmd('start', file);
  }

  /** Stops the daemon and everything it runs. */
  async kill(): Promise<void> {
    try {
      await this.cmd('kill');
    } catch {
      // already gone
    }
  }
}
