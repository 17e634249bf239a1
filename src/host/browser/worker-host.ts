// The worker host's page side: starts device-worker.ts, hands it the guest
// memory and the shared register file, and turns the control messages of
// protocol.ts into promises.
//
// The emulator's register accesses never wait for the worker: `mmio` is an
// MmioRegisters over the shared state, so reads are loads and writes are
// stores plus a doorbell notify. Interrupts arrive as the InterruptStatus word
// changing (with Atomics.notify); `onInterrupt` is served by an
// Atomics.waitAsync loop on it, started only when a callback is set (or, for
// a PCI disk, at once: it raises the function's INTx line).

import type { StorageError } from '../../backends/backend.ts';
import { MmioRegisters, MmioWord, createMmioState } from '../../virtio/mmio/mmio.ts';
import { VirtioPciFunction } from '../../virtio/pci/function.ts';
import { DiskHost, DiskTransport, type CreateDiskOptions, type Disk } from './types.ts';
import { STAT_SLOTS, readStats, type DiskStats } from './stats.ts';
import { DEVICE_POLL_MICROS } from './halt-poll.ts';
import {
  ControlWord,
  fromWireError,
  type BackendSpec,
  type HostMessage,
  type HostRequest,
} from './worker-protocol.ts';
import { waitAsync } from './wait-async.ts';

type Pending = { resolve: (value: unknown) => void; reject: (error: Error) => void };
/** A request before the id is stamped on. */
type Command = HostRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export async function createWorkerDisk(options: CreateDiskOptions & { backend: BackendSpec }): Promise<Disk> {
  if (typeof SharedArrayBuffer !== 'function') {
    throw new Error('the worker host needs SharedArrayBuffer: serve the page with COOP same-origin and COEP require-corp');
  }
  for (const region of options.memory) {
    const source = region.source;
    const buffer = source instanceof WebAssembly.Memory ? source.buffer : source;
    if (!(buffer instanceof SharedArrayBuffer)) {
      throw new TypeError('the worker host needs guest RAM in a shared WebAssembly.Memory or SharedArrayBuffer');
    }
  }
  const worker =
    options.createWorker?.() ??
    new Worker(new URL('./device-worker.ts', import.meta.url), { type: 'module', name: 'virtio-blk device' });
  const state = createMmioState(true);
  const control = new Int32Array(new SharedArrayBuffer(ControlWord.Length * 4));
  const statsArray = new Float64Array(new SharedArrayBuffer(STAT_SLOTS * 8));
  const mmio = new MmioRegisters(state);
  const pending = new Map<number, Pending>();
  let nextId = 1;
  let closed = false;
  let irqLoop = false;
  /** Made once the worker has built the device (its ID is in the state then). */
  let pci: VirtioPciFunction | null = null;

  const call = (command: Command): Promise<unknown> => {
    if (closed) return Promise.reject(new Error('the disk is closed'));
    const id = nextId++;
    const request = { ...command, id } as HostRequest;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.postMessage(request);
      if (request.type !== 'start') {
        // Announce it: the worker sleeps in Atomics.wait and sees no message
        // until woken (protocol.ts). Bumping the doorbell word makes a wait
        // that has not started yet return at once.
        Atomics.add(control, ControlWord.Posted, 1);
        Atomics.add(state, MmioWord.Doorbell, 1);
        Atomics.notify(state, MmioWord.Doorbell);
      }
    });
  };

  const failAll = (error: Error): void => {
    for (const p of pending.values()) p.reject(error);
    pending.clear();
  };

  let disk: Disk;
  worker.onmessage = (event: MessageEvent<HostMessage>) => {
    const message = event.data;
    switch (message.type) {
      case 'reply': {
        const p = pending.get(message.id);
        pending.delete(message.id);
        if (message.ok) p?.resolve(message.value);
        else p?.reject(fromWireError(message.error));
        break;
      }
      case 'storage-error':
        disk.onStorageError?.(fromWireError(message.error) as StorageError);
        break;
      case 'needs-reset':
        disk.onNeedsReset?.(message.reason);
        break;
    }
  };
  worker.onerror = (event) => {
    event.preventDefault();
    failAll(new Error(`the device worker failed: ${event.message || 'it could not be loaded'}`));
  };

  const irqLine = { array: state, index: MmioWord.InterruptStatus } as const;
  const startIrqLoop = async (): Promise<void> => {
    if (irqLoop) return;
    irqLoop = true;
    let seen = 0;
    while (!closed && (disk.onInterrupt || pci)) {
      // Sleeps until the device notifies the word (every interrupt does), or
      // returns at once when the word is not what we last saw.
      await waitAsync(irqLine.array, irqLine.index, seen);
      seen = Atomics.load(irqLine.array, irqLine.index);
      // The PCI line rises here; an ISR read on the emulator's thread lowers it.
      if (!closed) pci?.updateInterruptLevel();
      if (seen !== 0 && !closed) disk.onInterrupt?.(seen);
      // The callback may have acknowledged: look again before sleeping.
      seen = Atomics.load(irqLine.array, irqLine.index);
    }
    irqLoop = false;
  };

  let onInterrupt: ((status: number) => void) | null = null;
  disk = {
    host: DiskHost.Worker,
    mmio,
    get pci() {
      return pci;
    },
    state,
    irq: irqLine,
    get interruptLevel() {
      return Atomics.load(state, MmioWord.InterruptStatus);
    },
    async waitForInterrupt() {
      while (!closed && Atomics.load(state, MmioWord.InterruptStatus) === 0) {
        await waitAsync(state, MmioWord.InterruptStatus, 0);
      }
    },
    get onInterrupt() {
      return onInterrupt;
    },
    set onInterrupt(fn) {
      onInterrupt = fn;
      if (fn) void startIrqLoop();
    },
    onStorageError: null,
    onNeedsReset: null,
    get stats(): DiskStats {
      return readStats(statsArray);
    },
    async resize(sizeBytes) {
      await call({ type: 'resize', sizeBytes });
    },
    async setRateLimit(config) {
      await call({ type: 'set-rate-limit', config });
    },
    async flush() {
      await call({ type: 'flush' });
    },
    async close() {
      if (closed) return;
      try {
        await call({ type: 'close' });
      } finally {
        closed = true;
        worker.terminate();
        failAll(new Error('the disk is closed'));
        // Wake a waitForInterrupt that would otherwise sleep forever.
        Atomics.notify(state, MmioWord.InterruptStatus);
      }
    },
  };

  try {
    await call({
      type: 'start',
      memory: options.memory,
      state,
      control,
      stats: statsArray,
      backend: options.backend,
      device: options.device ?? {},
      spinMicros: options.spinMicros ?? DEVICE_POLL_MICROS,
    });
  } catch (err) {
    closed = true;
    worker.terminate();
    throw err;
  }
  if (options.transport === DiskTransport.Pci) {
    pci = new VirtioPciFunction(state, options.pci);
    // A PCI line follows the interrupt word for the disk's whole life: the
    // loop sleeps in waitAsync between interrupts.
    void startIrqLoop();
  }
  return disk;
}
