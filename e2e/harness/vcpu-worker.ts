// The guest's vCPU thread for the isolated harness: guest RAM is the shared
// WebAssembly.Memory the page made, the registers are the disk's shared
// register file, and the vCPU sleeps on the IRQ word with Atomics.wait (WFI).

import { GuestMemory } from '../../src/virtio/memory.ts';
import { MmioRegisters, MmioWord, type MmioState } from '../../src/virtio/mmio/mmio.ts';
import { serve } from './rpc.ts';
import { RAM_BASE, vcpuHandlers } from './vcpu.ts';

interface Boot {
  ram: WebAssembly.Memory;
  maxBytes: number;
  state: MmioState;
}

let handlers: ReturnType<typeof vcpuHandlers> | null = null;

serve({
  boot: ({ ram, maxBytes, state }: Boot) => {
    const mmio = new MmioRegisters(state);
    handlers = vcpuHandlers({
      mmio,
      ram,
      // Declared at its maximum: the part not grown into yet reads as out of range.
      memory: new GuestMemory([{ guestAddress: RAM_BASE, source: ram, size: maxBytes }]),
      waitForInterrupt: async () => {
        // WFI: sleep until the device raises the line (bounded, so a lost
        // wake-up costs time, never a hang).
        Atomics.wait(state, MmioWord.InterruptStatus, 0, 1000);
      },
    });
  },
  guest: async ({ op, args }: { op: string; args: unknown }) => {
    const handler = handlers?.[op];
    if (!handler) throw new Error(handlers ? `unknown guest op "${op}"` : 'the vCPU has not booted');
    return handler(args as never);
  },
});
