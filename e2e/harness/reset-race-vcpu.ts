// The reset race's vCPU worker: the driver side of test/race/reset-cycles.ts
// over the disk's shared register file, sleeping on the IRQ word with
// Atomics.wait as an emulator's WFI would.

import { GuestMemory } from '../../src/virtio/memory.ts';
import { MmioRegisters, MmioWord, type MmioState } from '../../src/virtio/mmio/mmio.ts';
import { runResetCycles } from '../../test/race/reset-cycles.ts';
import { serve } from './rpc.ts';

interface RunArgs {
  state: MmioState;
  ram: WebAssembly.Memory;
  ramBase: number;
  disk: SharedArrayBuffer;
  cycles: number;
  seed: number;
}

const pauseWord = new Int32Array(new SharedArrayBuffer(4));

serve({
  run: ({ state, ram, ramBase, disk, cycles, seed }: RunArgs) =>
    runResetCycles(
      {
        mmio: new MmioRegisters(state),
        memory: new GuestMemory([{ guestAddress: ramBase, source: ram }]),
        ramBase,
        disk: new Uint8Array(disk),
        waitForIrq: () => void Atomics.wait(state, MmioWord.InterruptStatus, 0, 5),
        // Nothing notifies this word: a bounded pause between Status polls.
        pause: () => void Atomics.wait(pauseWord, 0, 0, 1),
      },
      { cycles, seed },
    ),
});
