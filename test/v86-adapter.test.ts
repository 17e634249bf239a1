// The v86 adapter's pieces that need no guest: every internal it uses exists
// in the v86 build this repository installs (npm v86, loaded in Node), a
// missing one fails with an error naming it, BAR0 accesses v86 splits into
// bytes reach the function at the width the guest used, and a stalled
// request is diagnosed where it waits (the project's driver standing in for
// the guest's).

import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { V86 } from 'v86';
import { BarAccess } from '../src/host/v86/bar-access.ts';
import { V86HookError, v86Internals, type V86Cpu, type V86Like } from '../src/host/v86/hooks.ts';
import { jitDirtyingBackend } from '../src/host/v86/guest-ram.ts';
import { MemoryBackend } from '../src/backends/memory.ts';
import type { BlockBackend } from '../src/backends/backend.ts';
import type { PciFunctionAccessor } from '../src/virtio/pci/function.ts';
import { PciBarRegion, PciCommonCfg } from '../src/index.ts';
import { attachVirtioBlk } from '../src/host/v86/attach.ts';
import { BlkRequestType } from '../src/block/constants.ts';
import { VirtioBlkDriver } from '../src/driver/block.ts';
import { PciTransport } from '../src/driver/pci-transport.ts';
import { GuestMemory } from '../src/virtio/memory.ts';

const build = fileURLToPath(new URL('../node_modules/v86/build/', import.meta.url));

/** A v86 instance of the shipped build, loaded (CPU built) and not started. */
async function loadedV86(): Promise<{ emulator: V86Like & { destroy(): Promise<void> } }> {
  // Any 128 KiB image will do as a BIOS: the emulator is never started.
  const bios = new Uint8Array(128 << 10).buffer;
  const emulator = new V86({ wasm_path: `${build}v86.wasm`, bios: { buffer: bios }, memory_size: 32 << 20, autostart: false, disable_keyboard: true, disable_mouse: true, disable_speaker: true });
  await new Promise<void>((resolve) => emulator.add_listener('emulator-loaded', () => resolve()));
  return { emulator: emulator as unknown as V86Like & { destroy(): Promise<void> } };
}

describe('v86 hooks', () => {
  it('finds every internal the adapter uses in the installed v86 build', async () => {
    const { emulator } = await loadedV86();
    const cpu = v86Internals(emulator);
    expect(cpu.memory_size[0]).toBe(32 << 20);
    expect(cpu.mem8.byteOffset % 8).toBe(0);
    expect(cpu.wasm_memory.buffer.byteLength).toBeGreaterThanOrEqual(cpu.mem8.byteOffset + (32 << 20));
    await emulator.destroy();
  }, 60_000);

  it('names the missing hook', async () => {
    const { emulator } = await loadedV86();
    const cpu = (emulator as unknown as { v86: { cpu: Record<string, unknown> } }).v86.cpu;
    const saved = cpu.jit_dirty_cache;
    delete cpu.jit_dirty_cache;
    expect(() => v86Internals(emulator)).toThrowError(V86HookError);
    expect(() => v86Internals(emulator)).toThrowError(/emulator\.v86\.cpu\.jit_dirty_cache is missing/);
    cpu.jit_dirty_cache = saved;
    const pci = (cpu.devices as { pci: Record<string, unknown> }).pci;
    pci.raise_irq = 7;
    try {
      v86Internals(emulator);
      expect.unreachable();
    } catch (err) {
      expect((err as V86HookError).hook).toBe('emulator.v86.cpu.devices.pci.raise_irq');
    }
    expect(() => v86Internals({})).toThrowError(/emulator\.v86 is missing/);
    await emulator.destroy();
  }, 60_000);
});

describe('BarAccess', () => {
  const record = (): { fn: PciFunctionAccessor; log: string[] } => {
    const log: string[] = [];
    const fn: PciFunctionAccessor = {
      readConfig: () => 0,
      writeConfig: () => {},
      readBar: (offset, size) => {
        log.push(`r${size}@${offset.toString(16)}`);
        return size === 2 ? 0xbeef : 0x5a;
      },
      writeBar: (offset, size, value) => void log.push(`w${size}@${offset.toString(16)}=${value.toString(16)}`),
    };
    return { fn, log };
  };
  const queueSelect = PciBarRegion.CommonCfg + PciCommonCfg.QueueSelect;

  it('joins the two byte writes of a 16-bit common-config field into one 16-bit write', () => {
    const { fn, log } = record();
    const bar = new BarAccess(fn);
    bar.write8(queueSelect, 0x34);
    expect(log).toEqual([]);
    bar.write8(queueSelect + 1, 0x12);
    expect(log).toEqual([`w2@${queueSelect.toString(16)}=1234`]);
  });

  it('reads a 16-bit field once per byte at its natural width', () => {
    const { fn, log } = record();
    const bar = new BarAccess(fn);
    expect(bar.read8(queueSelect)).toBe(0xef);
    expect(bar.read8(queueSelect + 1)).toBe(0xbe);
    expect(log).toEqual([`r2@${queueSelect.toString(16)}`, `r2@${queueSelect.toString(16)}`]);
  });

  it('passes 8-bit fields, device config and notify bytes through as bytes', () => {
    const { fn, log } = record();
    const bar = new BarAccess(fn);
    const status = PciBarRegion.CommonCfg + PciCommonCfg.DeviceStatus;
    bar.write8(status, 0x0f);
    expect(bar.read8(PciBarRegion.IsrCfg)).toBe(0x5a);
    bar.write8(PciBarRegion.DeviceCfg + 0x20, 1);
    bar.write8(PciBarRegion.NotifyCfg, 0);
    expect(log).toEqual([
      `w1@${status.toString(16)}=f`,
      `r1@${PciBarRegion.IsrCfg.toString(16)}`,
      `w1@${(PciBarRegion.DeviceCfg + 0x20).toString(16)}=1`,
      `w1@${PciBarRegion.NotifyCfg.toString(16)}=0`,
    ]);
  });

  it('sends a lone low byte on as the byte write it was when anything else follows', () => {
    const { fn, log } = record();
    const bar = new BarAccess(fn);
    bar.write8(queueSelect, 0x34);
    bar.write32(PciBarRegion.CommonCfg + PciCommonCfg.QueueDescLo, 0x1000);
    expect(log).toEqual([`w1@${queueSelect.toString(16)}=34`, `w4@20=1000`]);
  });
});

describe('jitDirtyingBackend over memory that grows', () => {
  const KiB = 1024;
  /** A CPU-shaped object over a real WebAssembly.Memory with RAM at 64 KiB. */
  const fakeCpu = (): { cpu: V86Cpu; dirtied: Array<[number, number]> } => {
    const wasm = new WebAssembly.Memory({ initial: 4, maximum: 64 });
    const dirtied: Array<[number, number]> = [];
    const cpu = {
      wasm_memory: wasm,
      mem8: { byteOffset: 64 * KiB },
      memory_size: [128 * KiB],
      jit_dirty_cache: (start: number, end: number) => void dirtied.push([start, end]),
    } as unknown as V86Cpu;
    return { cpu, dirtied };
  };

  it('redoes an asynchronous read whose view was detached while it ran, and reports the range it filled', async () => {
    const { cpu, dirtied } = fakeCpu();
    const disk = new MemoryBackend(64 * KiB, { data: new Uint8Array(64 * KiB).fill(0xab) });
    let calls = 0;
    const slow: BlockBackend = {
      ...disk,
      size: disk.size,
      readOnly: false,
      supportsDiscard: false,
      supportsWriteZeroes: false,
      read: async (offset, dst) => {
        calls++;
        await Promise.resolve();
        // The first time, the guest's wasm grows (v86's JIT allocating) before the data arrives.
        if (calls === 1) cpu.wasm_memory.grow(1);
        disk.read(offset, dst);
      },
      write: () => {},
      flush: () => {},
      discard: () => {},
      writeZeroes: () => {},
      close: () => {},
    };
    let redos = 0;
    const wrapped = jitDirtyingBackend(slow, cpu, (s, e) => cpu.jit_dirty_cache(s, e), () => redos++);
    const guest = 0x1000;
    const view = new Uint8Array(cpu.wasm_memory.buffer, cpu.mem8.byteOffset + guest, 4 * KiB);
    await wrapped.read(0, view);
    expect(calls).toBe(2);
    expect(redos).toBe(1);
    const now = new Uint8Array(cpu.wasm_memory.buffer, cpu.mem8.byteOffset + guest, 4 * KiB);
    expect(now.every((b) => b === 0xab)).toBe(true);
    expect(dirtied).toEqual([[guest, guest + 4 * KiB]]);
  });

  it('leaves a synchronous read alone: one call, zero-copy, reported at once', () => {
    const { cpu, dirtied } = fakeCpu();
    const disk = new MemoryBackend(64 * KiB, { data: new Uint8Array(64 * KiB).fill(7) });
    const wrapped = jitDirtyingBackend(disk, cpu, (s, e) => cpu.jit_dirty_cache(s, e));
    const view = new Uint8Array(cpu.wasm_memory.buffer, cpu.mem8.byteOffset + 0x2000, 512);
    expect(wrapped.read(0, view)).toBeUndefined();
    expect(view.every((b) => b === 7)).toBe(true);
    expect(dirtied).toEqual([[0x2000, 0x2200]]);
  });
});

describe('diagnose and kick: where a stalled request waits', () => {
  it('names the link that holds (storage, the ring, the interrupt), and each kick moves the request on', async () => {
    const { emulator } = await loadedV86();
    const cpu = v86Internals(emulator);
    const inner = new MemoryBackend(1 << 20, { data: new Uint8Array(1 << 20).fill(0x5c) });
    // While `held` is set, reads wait in it (storage that does not answer); `reached` says one arrived.
    let held: Array<() => void> | null = null;
    let reached: () => void = () => {};
    const backend: BlockBackend = {
      size: inner.size,
      readOnly: false,
      supportsDiscard: false,
      supportsWriteZeroes: false,
      read: (offset, dst) =>
        new Promise<void>((resolve) => {
          const answer = (): void => {
            inner.read(offset, dst);
            resolve();
          };
          if (held) {
            held.push(answer);
            reached();
          } else queueMicrotask(answer);
        }),
      write: (offset, src) => inner.write(offset, src),
      flush: () => {},
      discard: () => {},
      writeZeroes: () => {},
      close: () => {},
    };
    const attached = attachVirtioBlk(emulator, { backend });
    const ram = { guestAddress: 0, source: cpu.wasm_memory, sourceOffset: cpu.mem8.byteOffset, size: cpu.memory_size[0]! };
    const memory = new GuestMemory([ram]);
    const driver = await VirtioBlkDriver.init({
      transport: new PciTransport(attached.disk.pci!),
      memory,
      arena: { addr: 1 << 20, len: 8 << 20 },
      waitForInterrupt: () => attached.disk.waitForInterrupt(),
    });
    const buffer = driver.allocate(512);
    const read = { type: BlkRequestType.In, sector: 0, in: [buffer] };
    expect(await driver.read(0, 512)).toEqual(new Uint8Array(512).fill(0x5c));
    let d = attached.diagnose();
    expect(d.verdict).toMatch(/^idle:/);
    expect(d.kick).toBeNull();
    expect(d.ring!.deviceNextAvail).toBe(d.ring!.availIdx);
    // v86's own state is read too (a CPU never started: interrupts off, both PICs there).
    expect(d.cpu.interruptsEnabled).toBe(false);
    expect(d.cpu.pic).toHaveLength(2);

    // Storage that never answers: the request is popped, in flight, its backend call unsettled.
    held = [];
    const arrived = new Promise<void>((resolve) => (reached = resolve));
    driver.submit(read);
    driver.kick();
    await arrived;
    d = attached.diagnose();
    expect(d.verdict).toMatch(/^storage: 1 backend call\(s\) unsettled, the oldest \(read 0\+512\)/);
    expect([d.backend.outstanding, d.device.inFlight, d.kick]).toEqual([1, 1, null]);
    const answers = held;
    held = null;
    for (const answer of answers) answer();
    expect(await driver.wait()).toHaveLength(1);
    expect(attached.diagnose().verdict).toMatch(/^idle:/);

    // A chain made available without a notification: the ring holds it; a queue kick serves it.
    driver.submit(read);
    d = attached.diagnose();
    expect(d.verdict).toMatch(/^ring: 1 chain\(s\) available the device never popped/);
    expect(d.kick).toBe('queue');
    attached.kick('queue');
    expect(await driver.wait()).toHaveLength(1);

    // A completion whose interrupt the guest took (ISR read) without reaping: an interrupt kick raises the line again.
    driver.submit(read);
    driver.kick();
    await attached.disk.waitForInterrupt();
    expect(attached.disk.pci!.readBar(PciBarRegion.IsrCfg, 1)).toBe(1);
    d = attached.diagnose();
    expect(d.verdict).toMatch(/^interrupt: 1 completion\(s\) published past used_event .*ISR 0 and the line low/);
    expect([d.kick, d.line.level]).toEqual(['interrupt', false]);
    const raises = d.line.raises;
    attached.kick('interrupt');
    d = attached.diagnose();
    expect([d.line.isr, d.line.level, d.line.raises]).toEqual([1, true, raises + 1]);
    expect(await driver.wait()).toHaveLength(1);
    d = attached.diagnose();
    expect(d.verdict).toMatch(/^idle:/);
    expect([d.line.isr, d.line.level]).toEqual([0, false]);
    await emulator.destroy();
  }, 60_000);
});
