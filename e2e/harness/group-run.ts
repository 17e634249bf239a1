// Two worker-hosted disks (memory backends) in one RateLimitGroup, each
// driven from the calling page by its own driver, `depth` requests deep, for
// `ms` after `warmupMs`: what each completed in the measured window, and
// what the devices counted. The e2e suite checks the group's bound with it;
// the benchmark reports its accuracy.

import { BlkRequestType, BlkStatus } from '../../src/block/constants.ts';
import { VirtioBlkDriver } from '../../src/driver/driver.ts';
import { createDisk } from '../../src/host/browser/disk.ts';
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

/** Two worker-hosted memory disks in `group`, each with its own guest RAM and driver. */
async function twoDisks(group: RateLimitGroup) {
  return Promise.all(
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
}

export async function groupRun({ config, ms, warmupMs = 0, depth }: GroupRunArgs): Promise<GroupRunResult> {
  const disks = await twoDisks(RateLimitGroup.create(config));
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

// ---- a held group, for the e2e test: no clock involved ----------------------
//
// `groupHoldStart` puts `depth` reads on each of two disks at once, against a
// group whose budget does not refill while the test runs; the test watches
// `groupHoldCounts` until both devices have been refused, then
// `groupHoldRelease` lifts the limit and waits for every read. The budget is
// the bound: however fast or slow the machine, no more than the bucket holds
// can complete before the release.

interface Held {
  group: RateLimitGroup;
  disks: Array<{ disk: Awaited<ReturnType<typeof createDisk>>; completed: number; bad: number }>;
  all: Promise<unknown>;
}
let held: Held | null = null;

export async function groupHoldStart({ config, depth }: { config: RateLimiterConfig; depth: number }): Promise<void> {
  const group = RateLimitGroup.create(config);
  const disks = (await twoDisks(group)).map((d) => ({ ...d, completed: 0, bad: 0 }));
  const all = Promise.all(
    disks.flatMap((d, i) =>
      Array.from({ length: depth }, async (_, j) => {
        const c = await d.driver.run({ type: BlkRequestType.In, sector: (i * 64 + j) * 8, in: [d.driver.allocate(4096)] });
        if (c.status === BlkStatus.Ok) d.completed++;
        else d.bad++;
      }),
    ),
  );
  held = { group, disks, all };
}

export function groupHoldCounts(): { completed: number[]; bad: number[]; throttled: number[] } {
  const h = held!;
  return { completed: h.disks.map((d) => d.completed), bad: h.disks.map((d) => d.bad), throttled: h.disks.map((d) => d.disk.stats.throttled) };
}

export async function groupHoldRelease({ config }: { config: RateLimiterConfig }): Promise<{
  beforeRelease: number[];
  completed: number[];
  bad: number[];
}> {
  const h = held!;
  const beforeRelease = h.disks.map((d) => d.completed);
  h.group.update(config);
  await h.all;
  await Promise.all(h.disks.map((d) => d.disk.close()));
  held = null;
  return { beforeRelease, completed: h.disks.map((d) => d.completed), bad: h.disks.map((d) => d.bad) };
}
