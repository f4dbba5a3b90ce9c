/** Pure logic: cgroup detection per controller (v1, v2, hybrid), limits, exposure. No root needed. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { exposure } from './access.js';
import { detectLayout, parseProcCgroup, swarmWeight } from './cgroups.js';
import {
  agentHostname,
  cgroupLeafName,
  DEFAULT_LIMITS,
  resolveLimits,
  resolvePolicy,
  sharesToWeight,
} from './policy.js';
import { neededDirs } from './native-spawner.js';
import { TESTDATA } from './testutil.js';

const V2_MOUNTINFO = `25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
`;
const HYBRID_MOUNTINFO = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const HYBRID_SELF = `9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
`;

describe('cgroup layout detection', () => {
  it('pure v2: every controller on the unified hierarchy, nested under the kernel cgroup', () => {
    const l = detectLayout(
      V2_MOUNTINFO,
      '0::/system.slice/clove.service\n',
      () => 'cpuset cpu io memory hugetlb pids rdma misc\n',
    );
    expect(l.version).toBe('v2');
    expect(l.v1).toEqual([]);
    for (const c of ['memory', 'cpu', 'cpuacct', 'pids', 'freezer'] as const)
      expect(l.controllers[c]?.version).toBe(2);
    expect(l.v2!.ownDir).toBe('/sys/fs/cgroup/system.slice/clove.service');
  });

  it('pure v2 without the memory controller delegated: memory unavailable, the rest present', () => {
    const l = detectLayout(V2_MOUNTINFO, '0::/\n', () => 'cpu pids\n');
    expect(l.controllers.memory).toBeUndefined();
    expect(l.controllers.cpu?.version).toBe(2);
  });

  it('hybrid (this host): v1 controllers, cgroup2 kept for identity, the kernel memory cgroup nested', () => {
    const l = detectLayout(HYBRID_MOUNTINFO, HYBRID_SELF, () => 'hugetlb\n');
    expect(l.version).toBe('hybrid');
    expect(l.controllers.memory).toMatchObject({
      version: 1,
      ownDir: '/sys/fs/cgroup/memory/process_api/abc',
    });
    expect(l.controllers.pids?.mount).toBe('/sys/fs/cgroup/pids');
    expect(l.controllers.cpuacct?.mount).toBe('/sys/fs/cgroup/cpuacct');
    expect(l.v2?.mount).toBe('/sys/fs/cgroup/unified');
    expect(l.v1.map((h) => h.mount)).not.toContain('/sys/fs/cgroup/systemd');
  });

  it('co-mounted v1 controllers (cpu,cpuacct) share one hierarchy', () => {
    const mi = `32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n`;
    const l = detectLayout(mi, '3:cpu,cpuacct:/k\n', () => '');
    expect(l.controllers.cpu).toBe(l.controllers.cpuacct);
    expect(l.controllers.cpu!.ownDir).toBe('/sys/fs/cgroup/cpu,cpuacct/k');
  });

  it('parses /proc/<pid>/cgroup', () => {
    expect(parseProcCgroup('4:memory:/a/b\n0::/clove/1.0/x_1\n')).toEqual([
      { id: '4', controllers: ['memory'], path: '/a/b' },
      { id: '0', controllers: [], path: '/clove/1.0/x_1' },
    ]);
  });
});

describe('policy', () => {
  it('applies the reference defaults and validates limits', () => {
    expect(resolveLimits(undefined)).toEqual(DEFAULT_LIMITS);
    expect(resolveLimits({ memory: 64 << 20 }).memory).toBe(64 << 20);
    expect(() => resolveLimits({ memory: 1 })).toThrow(
      expect.objectContaining({ name: 'PolicyError', field: 'limits.memory' }),
    );
    expect(() => resolveLimits({ max_pids: 0 })).toThrow(/max_pids/);
    expect(() => resolveLimits({ cpu_period: 10 })).toThrow(/cpu_period/);
    expect(() => resolveLimits({ cpu_quota: 1.5 })).toThrow(/integer/);
    expect(() => resolveLimits({ bogus: 1 } as never)).toThrow(/unknown/);
  });

  it('never runs agents as root and converts shares to weights like the reference', () => {
    expect(() => resolvePolicy({ uid: 0 })).toThrow(/uid/);
    expect(resolvePolicy({}).uid).toBe(65534);
    expect(sharesToWeight(1024)).toBe(100);
    expect(sharesToWeight(2)).toBe(1);
    expect(sharesToWeight(262144)).toBe(10000);
  });

  it("weighs the swarm's directories as one process per CPU, within each version's range", () => {
    expect(swarmWeight(1)).toEqual({ shares: 1024, weight: 100 });
    expect(swarmWeight(2)).toEqual({ shares: 2048, weight: 200 });
    expect(swarmWeight(0)).toEqual({ shares: 1024, weight: 100 });
    expect(swarmWeight(512)).toEqual({ shares: 262144, weight: 10000 });
  });

  it('names hostnames and cgroups safely', () => {
    expect(agentHostname('worker')).toBe('clove-worker');
    expect(agentHostname('a/b c'.repeat(20)).length).toBeLessThanOrEqual(64);
    expect(cgroupLeafName('../../etc', 3)).toBe('.._.._etc_3');
    expect(cgroupLeafName('', 3)).toBe('agent_3');
  });
});

describe('exposure', () => {
  it('masks /tmp and untraversable ancestors, keeping only what the agent needs', () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-exp-'));
    try {
      const secret = path.join(base, 'secret');
      fs.mkdirSync(path.join(secret, 'a', 'b'), { recursive: true });
      fs.chmodSync(base, 0o755);
      fs.chmodSync(secret, 0o700);
      const uid = process.geteuid?.() === 0 ? 65534 : (process.geteuid?.() ?? 1) + 1;
      const e = exposure([path.join(secret, 'a', 'b'), path.join(secret, 'a'), '/usr/bin'], uid, uid, true);
      expect(e.masks).toEqual(['/tmp']); // the secret dir is below /tmp, already masked
      expect(e.keep).toEqual([path.join(secret, 'a')]);
      expect(exposure(['/usr/bin'], uid, uid, false)).toEqual({ masks: [], keep: [] });
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });

  it('needs the cwd, the socket dir, the program prefix and the script dir', () => {
    const dirs = neededDirs(
      '/usr/bin/python3',
      ['/usr/bin/python3', path.join(TESTDATA, 'hog.py')],
      { CLOVE_SOCKET: '/var/clove/run/agent.sock', PYTHONPATH: '/opt/sdk' },
      '/work',
    );
    expect(dirs).toContain('/work');
    expect(dirs).toContain('/usr');
    expect(dirs).toContain('/var/clove/run');
    expect(dirs).toContain(TESTDATA);
    expect(neededDirs('/bin/true', ['/bin/true', '/no/such/file'], {}, '/w')).not.toContain('/no/such');
  });
});
