// The demo's vCPU worker (cross-origin isolated pages): boots the guest over
// the shared guest RAM and the disk's shared register file, then runs one
// workload per message. It sleeps on the IRQ word with Atomics.wait, as an
// emulator's WFI would; progress goes back as messages.

import { GuestMemory } from '../virtio/memory.ts';
import { MmioRegisters, MmioWord, type MmioState } from '../virtio/mmio/mmio.ts';
import { DEMO_RAM_BASE, DemoGuest, type DemoRunOptions } from './guest.ts';

export type GuestRequest =
  | { type: 'boot'; ram: WebAssembly.Memory; maxBytes: number; state: MmioState; stop: Int32Array }
  | { type: 'run'; options: DemoRunOptions };

export type GuestReply =
  | { type: 'booted'; info: DemoGuest['info'] }
  | { type: 'progress'; progress: import('./workload.ts').WorkloadProgress }
  | { type: 'done'; result: import('./guest.ts').DemoRunResult }
  | { type: 'error'; message: string };

const scope = globalThis as unknown as DedicatedWorkerGlobalScope;
let guest: DemoGuest | null = null;
const reply = (message: GuestReply): void => scope.postMessage(message);

scope.onmessage = async (event: MessageEvent<GuestRequest>) => {
  const request = event.data;
  try {
    if (request.type === 'boot') {
      const { ram, maxBytes, state, stop } = request;
      const memory = new GuestMemory([{ guestAddress: DEMO_RAM_BASE, source: ram, size: maxBytes }]);
      guest = await DemoGuest.boot(new MmioRegisters(state), memory, stop, async () => {
        // WFI, bounded so a stop request is seen even if no interrupt comes.
        Atomics.wait(state, MmioWord.InterruptStatus, 0, 200);
      });
      reply({ type: 'booted', info: guest.info });
    } else {
      if (!guest) throw new Error('the guest has not booted');
      const result = await guest.run(request.options, (progress) => reply({ type: 'progress', progress }));
      reply({ type: 'done', result });
    }
  } catch (err) {
    reply({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  }
};
