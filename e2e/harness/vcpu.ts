// What the e2e "guest" does, as harness operations: it is the emulator's vCPU,
// running the Linux-style driver against the disk's registers over guest RAM.
// In the isolated harness it runs in its own worker (vcpu-worker.ts) and
// sleeps on the IRQ word with Atomics.wait, as an emulator's WFI would; in the
// non-isolated harness it runs on the page next to the same-thread host.

import { BlkRequestType, BlkStatus, SECTOR_SIZE } from '../../src/block/constants.ts';
import { DiskModel, runWorkload, verifyAgainstModel, type WorkloadOptions } from '../../src/demo/workload.ts';
import { VirtioBlkDriver, arenaBytes, type MmioAccessor, type Segment } from '../../src/driver/driver.ts';
import type { GuestMemory } from '../../src/virtio/memory.ts';
import { pattern } from '../../test/contract/backend-contract.ts';
import type { Handlers } from './rpc.ts';

export const RAM_BASE = 0x4000_0000;
/** Guest RAM the driver's rings, headers and data buffers use (from RAM_BASE). */
const ARENA_BYTES = 24 << 20;
/** Data area for workloads, carved from the arena once. */
const DATA_BYTES = 16 << 20;

export interface VcpuContext {
  mmio: MmioAccessor;
  memory: GuestMemory;
  /** Guest RAM itself (grown by `growMidIo`). */
  ram: WebAssembly.Memory;
  waitForInterrupt: () => Promise<void>;
}

export function vcpuHandlers(ctx: VcpuContext): Handlers {
  let driver: VirtioBlkDriver | null = null;
  let data: Segment = { addr: 0, len: 0 };
  /** Models by span (sectors): verify runs accumulate state across calls. */
  const models = new Map<number, DiskModel>();

  const init = async (queueSize?: number): Promise<VirtioBlkDriver> => {
    const d = await VirtioBlkDriver.init({
      mmio: ctx.mmio,
      memory: ctx.memory,
      arena: { addr: RAM_BASE, len: ARENA_BYTES },
      queueSize,
      waitForInterrupt: ctx.waitForInterrupt,
    });
    // The data area sits after the driver's own structures, at a fixed place.
    data = { addr: RAM_BASE + arenaBytes(d.queueSize), len: DATA_BYTES };
    driver = d;
    return d;
  };
  const need = (): VirtioBlkDriver => {
    if (!driver) throw new Error('the guest driver is not initialised');
    return driver;
  };
  const slots = (count: number, bytes: number, from = data.addr): Segment[] => {
    if (count * bytes > data.len) throw new RangeError('workload does not fit the data area');
    return Array.from({ length: count }, (_, i) => ({ addr: from + i * bytes, len: bytes }));
  };
  const modelFor = (spanSectors: number): DiskModel => {
    let model = models.get(spanSectors);
    if (!model) models.set(spanSectors, (model = new DiskModel(spanSectors * SECTOR_SIZE)));
    return model;
  };

  return {
    init: async ({ queueSize }: { queueSize?: number }) => {
      const d = await init(queueSize);
      return { queueSize: d.queueSize, capacitySectors: d.capacitySectors, readOnly: d.readOnly, id: await d.getId() };
    },
    /** Run a workload; verify also re-reads its whole span against the model at the end. */
    workload: async (options: Omit<WorkloadOptions, 'onProgress' | 'shouldStop'> & { spanSectors: number }) => {
      const d = need();
      const model = options.kind === 'verify' ? modelFor(options.spanSectors) : undefined;
      const buffers = slots(options.queueDepth, options.blockBytes);
      const result = await runWorkload(d, options, buffers, model);
      const finalMismatches = model ? await verifyAgainstModel(d, model, { addr: data.addr, len: 1 << 20 }) : 0;
      return { ...result, finalMismatches };
    },
    writePattern: async ({ sector, bytes, seed }: { sector: number; bytes: number; seed: number }) => {
      await need().write(sector, pattern(bytes, seed), { addr: data.addr, len: bytes });
    },
    /** Index of the first byte that differs from pattern(bytes, seed), or -1. */
    checkPattern: async ({ sector, bytes, seed }: { sector: number; bytes: number; seed: number }) => {
      const got = await need().read(sector, bytes, { addr: data.addr, len: bytes });
      const want = pattern(bytes, seed);
      return got.findIndex((b, i) => b !== want[i]);
    },
    /** `bytes` (at most the data area) read at `sector`, as base64: for tests that check a whole image on the host. */
    readBase64: async ({ sector, bytes }: { sector: number; bytes: number }) => {
      const got = await need().read(sector, bytes, { addr: data.addr, len: bytes });
      let text = '';
      for (let i = 0; i < got.length; i += 0x8000) text += String.fromCharCode(...got.subarray(i, i + 0x8000));
      return btoa(text);
    },
    flush: () => need().flush(),
    capacity: () => need().capacitySectors,
    /** The status of one read or write of `bytes` at `sector`. */
    ioStatus: async ({ sector, bytes, write }: { sector: number; bytes: number; write: boolean }) => {
      const seg = [{ addr: data.addr, len: bytes }];
      const c = await need().run(
        write ? { type: BlkRequestType.Out, sector, out: seg } : { type: BlkRequestType.In, sector, in: seg },
      );
      return c.status;
    },
    /** Wait until a config-change interrupt shows `sectors` of capacity; returns the config changes seen. */
    waitConfigChange: async ({ sectors }: { sectors: number }) => {
      const d = need();
      while (d.configChanges === 0 || d.capacitySectors !== sectors) {
        if (d.ackInterrupt() === 0) await ctx.waitForInterrupt();
      }
      return { configChanges: d.configChanges, capacitySectors: d.capacitySectors };
    },
    resetMidIo: ({ queueDepth, blockBytes }: { queueDepth: number; blockBytes: number }) =>
      resetMidIo(need(), init, slots, queueDepth, blockBytes),
    growMidIo: async ({ growPages, queueDepth, spanSectors }: { growPages: number; queueDepth: number; spanSectors: number }) => {
      const d = need();
      const model = modelFor(spanSectors);
      const before = ctx.ram.buffer.byteLength;
      let grown = false;
      const options: WorkloadOptions = { kind: 'verify', queueDepth, blockBytes: 64 * 1024, ops: 3000, spanSectors, seed: 7 };
      // Grow while requests are in flight (progress reports come between completions).
      const first = await runWorkload(
        d,
        { ...options, progressEvery: 100, onProgress: () => void (grown ||= (ctx.ram.grow(growPages), true)) },
        slots(queueDepth, 64 * 1024),
        model,
      );
      const after = ctx.ram.buffer.byteLength;
      // Then do I/O with every data buffer in the part of RAM that did not exist before.
      const high = Array.from({ length: queueDepth }, (_, i) => ({ addr: RAM_BASE + before + i * 64 * 1024, len: 64 * 1024 }));
      const second = await runWorkload(d, { ...options, seed: 8 }, high, model);
      const finalMismatches = await verifyAgainstModel(d, model, high[0]!);
      return { before, after, first, second, finalMismatches };
    },
  };
}

/**
 * Fill a region with pattern A, put `queueDepth` requests in flight (writes of
 * pattern B and reads, alternating), reset the device at once, then check:
 * Status reads 0, each write landed whole or not at all, the device works
 * after re-initialisation, and nothing wrote the old read buffers after the
 * reset (they were poisoned right after it).
 */
async function resetMidIo(
  driver: VirtioBlkDriver,
  init: () => Promise<VirtioBlkDriver>,
  slots: (count: number, bytes: number, from?: number) => Segment[],
  queueDepth: number,
  blockBytes: number,
) {
  const sectorsPer = blockBytes / SECTOR_SIZE;
  const buffers = slots(queueDepth, blockBytes);
  const spare = buffers[buffers.length - 1]!.addr + blockBytes;
  for (let i = 0; i < queueDepth; i++) await driver.write(i * sectorsPer, pattern(blockBytes, 1000 + i), { addr: spare, len: blockBytes });
  await driver.flush();
  const memory = driver.memory;
  for (let i = 0; i < queueDepth; i++) {
    const seg = buffers[i]!;
    if (i % 2 === 0) {
      memory.write(seg.addr, pattern(blockBytes, 2000 + i));
      driver.submit({ type: BlkRequestType.Out, sector: i * sectorsPer, out: [seg] });
    } else {
      driver.submit({ type: BlkRequestType.In, sector: i * sectorsPer, in: [seg] });
    }
  }
  driver.kick();
  await driver.reset();
  const statusAfterReset = driver.status;
  const poison = new Uint8Array(blockBytes).fill(0xab);
  for (const seg of buffers) memory.write(seg.addr, poison);

  const fresh = await init();
  let wholeWrites = 0;
  for (let i = 0; i < queueDepth; i += 2) {
    const got = await fresh.read(i * sectorsPer, blockBytes, { addr: spare, len: blockBytes });
    const old = pattern(blockBytes, 1000 + i);
    const neu = pattern(blockBytes, 2000 + i);
    if (got.every((b, j) => b === old[j]) || got.every((b, j) => b === neu[j])) wholeWrites++;
  }
  // More I/O after the reset, none of it through the poisoned buffers.
  for (let i = 0; i < queueDepth; i++) await fresh.write(i * sectorsPer, pattern(blockBytes, 3000 + i), { addr: spare, len: blockBytes });
  await fresh.flush();
  let readBack = 0;
  for (let i = 0; i < queueDepth; i++) {
    const got = await fresh.read(i * sectorsPer, blockBytes, { addr: spare, len: blockBytes });
    const want = pattern(blockBytes, 3000 + i);
    if (got.every((b, j) => b === want[j])) readBack++;
  }
  let poisonIntact = 0;
  const check = new Uint8Array(blockBytes);
  for (const seg of buffers) {
    memory.read(seg.addr, check);
    if (check.every((b) => b === 0xab)) poisonIntact++;
  }
  const okStatus = (await fresh.run({ type: BlkRequestType.Flush })).status === BlkStatus.Ok;
  return { statusAfterReset, writes: Math.ceil(queueDepth / 2), wholeWrites, readBack, poisonIntact, buffers: buffers.length, okStatus };
}
