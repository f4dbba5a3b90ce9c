/**
 * The Docker provider: two node containers of the locally built image (real dockerd, through dockerode),
 * beside real etcd and NATS (provider-suite.ts); plus the image cache and the sweep of leftovers.
 */
import fs from 'node:fs';
import path from 'node:path';
import Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { DockerProvider, dockerUnavailable, sweepContainers } from './docker.js';
import { ensureNodeImage, HARNESS_LABEL, pruneNodeImages } from './image.js';
import { tempDir } from '../kernel.js';
import { describeProvider } from './provider-suite.js';

const docker = new Docker();
const why = await dockerUnavailable(docker);

describeProvider('docker', () => new DockerProvider({ docker }), {
  addresses: ['127.0.0.22', '127.0.0.23'],
  skip: why,
  afterStop: async () => {
    const left = await docker.listContainers({
      all: true,
      filters: JSON.stringify({ label: [`${HARNESS_LABEL}.pid=${process.pid}`] }),
    });
    expect(left).toEqual([]);
  },
});

describe.skipIf(why !== null)('docker node image and leftovers', () => {
  it('a second build with nothing changed reuses both images', async () => {
    await ensureNodeImage(docker);
    const again = await ensureNodeImage(docker);
    expect(again.builtBase).toBe(false);
    expect(again.builtProject).toBe(false);
    expect(again.tag).toMatch(/^clove-node:[0-9a-f]{16}$/);
    expect((await docker.getImage(again.tag).inspect()).Config.Env).toContain(`CLOVE_PYTHON=${again.python}`);
  }, 300_000);

  it('prune removes an older project image and keeps the current one and its base', async () => {
    const img = await ensureNodeImage(docker);
    const old = `clove-node:prune${process.pid}`;
    const ctx = tempDir('clvprune');
    fs.writeFileSync(
      path.join(ctx, 'Dockerfile'),
      `FROM ${img.baseTag}\nLABEL clove.harness.test=${process.pid}\n`,
    );
    try {
      const stream = await docker.buildImage({ context: ctx, src: ['Dockerfile'] }, { t: old });
      await new Promise((res, rej) => docker.modem.followProgress(stream, (e) => (e ? rej(e) : res(null))));
    } finally {
      fs.rmSync(ctx, { recursive: true, force: true });
    }
    expect(await pruneNodeImages(docker, img)).not.toContain(old); // too young
    const removed = await pruneNodeImages(docker, img, 0);
    expect(removed).toContain(old);
    await expect(docker.getImage(old).inspect()).rejects.toThrow();
    expect((await docker.getImage(img.tag).inspect()).Id).toBeTruthy();
    expect((await docker.getImage(img.baseTag).inspect()).Id).toBeTruthy();
  }, 120_000);

  it('the sweep removes a harness container whose owner process is gone, and leaves a live owner’s alone', async () => {
    const img = await ensureNodeImage(docker);
    const mk = (pid: number, name: string) =>
      docker.createContainer({
        name,
        Image: img.tag,
        Cmd: ['sleep', '600'],
        Labels: { [HARNESS_LABEL]: 'sweep-test', [`${HARNESS_LABEL}.pid`]: String(pid) },
        HostConfig: { NetworkMode: 'host' },
      });
    // A pid that is certainly gone: beyond pid_max.
    const dead = await mk(4_194_305, `clove-sweep-dead-${process.pid}`);
    const live = await mk(process.pid, `clove-sweep-live-${process.pid}`);
    try {
      const removed = await sweepContainers(docker);
      expect(removed).toContain(`/clove-sweep-dead-${process.pid}`);
      await expect(dead.inspect()).rejects.toThrow();
      expect((await live.inspect()).Id).toBeTruthy();
    } finally {
      await live.remove({ force: true });
      await dead.remove({ force: true }).catch(() => undefined);
    }
  }, 120_000);
});
