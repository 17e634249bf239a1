// Two worker-hosted disks (memory backends) in one RateLimitGroup, each
// driven from the calling page by its own driver, `depth` requests deep, for
// `ms` after `warmupMs`: what each completed in the measured window, and
// what the devices counted. The e2e suite checks the group's bound with it;
// the benchmark reports its accuracy.

import { BlkRequestType, BlkStatus } from '../../src/block/constants.ts';
import { VirtioBlkDriver } from '../../src/driver/driver.ts';
import { createDisk } from '../../src/host/disk.ts';
import { RateLimitGroup, type RateLimiterConfig } from '../../src/limiter/index.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';

const RAM_BASE = 0x4000_0000;
const PAGES = 64;

export interface GroupRunArgs {
  config: RateLimiterConfig;
  ms: number;
  warmupMs?: number;
  depth: number;
}

export interface GroupRunResult {
  /** Per disk: requests completed OK inside the window, and non-OK statuses. */
  done: Array<{ completed: number; bad: number }>;
  /** The measured window. */
  elapsedMs: number;
  /** Per disk: chains the device put back because the group refused them. */
  throttled: number[];
}

export async function groupRun({ config, ms, warmupMs = 0, depth }: GroupRunArgs): Promise<GroupRunResult> {
  const group = RateLimitGroup.create(config);
  const disks = await Promise.all(
    [0, 1].map(async () => {
      const ram = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true });
      const memory = [{ guestAddress: RAM_BASE, source: ram }];
      const disk = await createDisk({
        memory,
        backend: { kind: 'memory', size: 1 << 20 },
        device: { rateLimitGroup: group.buffer },
        host: 'worker',
      });
      const driver = await VirtioBlkDriver.init({
        mmio: disk.mmio,
        memory: new GuestMemory(memory),
        arena: { addr: RAM_BASE, len: PAGES * 65536 },
        waitForInterrupt: () => disk.waitForInterrupt(),
      });
      return { disk, driver };
    }),
  );
  const begin = performance.now();
  const from = begin + warmupMs;
  const until = from + ms;
  const done = await Promise.all(
    disks.map(async ({ driver }, i) => {
      let completed = 0;
      let bad = 0;
      const buffers = Array.from({ length: depth }, () => driver.allocate(4096));
      await Promise.all(
        buffers.map(async (buf, j) => {
          for (let k = 0; performance.now() < until; k++) {
            const c = await driver.run({ type: BlkRequestType.In, sector: ((i * 97 + j * 13 + k) % 256) * 8, in: [buf] });
            const now = performance.now();
            if (c.status !== BlkStatus.Ok) bad++;
            else if (now >= from && now < until) completed++;
          }
        }),
      );
      return { completed, bad };
    }),
  );
  const throttled = disks.map(({ disk }) => disk.stats.throttled);
  await Promise.all(disks.map(({ disk }) => disk.close()));
  return { done, elapsedMs: ms, throttled };
}
