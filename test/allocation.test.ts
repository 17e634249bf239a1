// No per-request allocation on the device's hot path. test/support/alloc-probe.ts
// samples a long run's allocations in a process of its own (under tsx, the
// way the CLI loads the code); here only the device's files count. The
// guest-side driver that drives it allocates freely, which also shows that
// the probe sees allocations at all.

import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function probe(...args: string[]) {
  const out = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'test/support/alloc-probe.ts'), ...args], {
    cwd: root,
    encoding: 'utf8',
  });
  const r = JSON.parse(out.trim().split('\n').at(-1)!) as { requests: number; bad: number; bytesByFile: Record<string, number> };
  const sum = (re: RegExp) => Object.entries(r.bytesByFile).reduce((n, [f, b]) => (re.test(f) ? n + b : n), 0);
  return {
    requests: r.requests,
    bad: r.bad,
    driverPerRequest: sum(/\/src\/driver\//) / r.requests,
    devicePerRequest: sum(/\/src\/(virtio|block|host)\//) / r.requests,
    backendPerRequest: sum(/\/src\/backends\//) / r.requests,
  };
}

describe('allocation', () => {
  it('the device allocates nothing per request (4 KiB reads, QD32, same-thread host)', () => {
    const r = probe();
    expect(r.requests).toBe(320_000);
    expect(r.bad).toBe(0);
    expect(r.driverPerRequest).toBeGreaterThan(100);
    // A few samples allow for a late optimisation landing in a device frame.
    expect(r.devicePerRequest).toBeLessThan(2);
    // The probe runs synchronously in a child process: 60.5 s beside other suites on 2 cores.
  }, 300_000);
});
