// The device's thread for the Node reset race (reset-race.test.ts): a
// VirtioBlkDevice over an asynchronous backend behind the shared register
// file, in the loop the worker host runs (src/host/browser/device-worker.ts): poll,
// give promise callbacks a turn, then wait on the doorbell — Atomics.wait
// when nothing is in flight, Atomics.waitAsync while requests wait on the
// backend, so its promises settle.
//
// The register file sees the device through a proxy that stalls at random
// where it reads `inFlight`: MmioDevice reads it to decide whether it may
// go Idle, at the end of every poll and of every reset, just after a reset
// has stored Status = 0. A stall there is what this thread being preempted
// at that point looks like; it widens the windows the driver races into
// from a few instructions to microseconds, so a run finds them in seconds
// rather than by luck, and a correct handshake must not care.
import { parentPort, workerData } from 'node:worker_threads';
import { MemoryBackend } from '../../src/backends/memory.ts';
import { VirtioBlkDevice } from '../../src/block/device.ts';
import { waitAsync } from '../../src/host/browser/wait-async.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';
import { MmioDevice, MmioWord, type MmioState } from '../../src/virtio/mmio/mmio.ts';
import { AsyncBackend, rng } from './async-backend.ts';

export interface DeviceThreadData {
  state: MmioState;
  ram: SharedArrayBuffer;
  ramBase: number;
  disk: SharedArrayBuffer;
  /** Word 0: set to 1 to stop. */
  control: Int32Array;
  /** Word 0: polls this loop has begun (the driver's 'chase' mode waits on it). */
  polls: Int32Array;
  seed: number;
}

/** Most iterations of a stall (some microseconds). */
const STALL_SPINS = 20_000;

function stalled<T extends object>(device: T, random: () => number): T {
  let sink = 0;
  return new Proxy(device, {
    get(target, key) {
      if (key === 'inFlight' && random() < 0.5) {
        const spins = Math.floor(random() * STALL_SPINS);
        for (let i = 0; i < spins; i++) sink = (sink * 31 + i) | 0;
      }
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
    set(target, key, value) {
      return Reflect.set(target, key, value, target);
    },
  });
}

const { state, ram, ramBase, disk, control, polls, seed } = workerData as DeviceThreadData;
const backend = new AsyncBackend(new MemoryBackend(disk.byteLength, { data: new Uint8Array(disk), shareBuffer: true }), seed);
const device = new VirtioBlkDevice(backend);
const transport = new MmioDevice(state, stalled(device, rng(seed ^ 0x57a11)), GuestMemory.of(ram, ramBase));
let needsReset = 0;
transport.onNeedsReset = () => void needsReset++;
let wakeups = 0;

// Node ends a worker whose event loop has nothing left but an
// Atomics.waitAsync (it holds no handle): keep one until the loop is done.
const keepAlive = setInterval(() => {}, 1 << 30);
parentPort!.postMessage({ type: 'ready' });
while (Atomics.load(control, 0) === 0) {
  const bell = Atomics.load(state, MmioWord.Doorbell);
  Atomics.add(polls, 0, 1);
  transport.poll();
  // A reset's completion is a promise callback: give it its turn.
  await Promise.resolve();
  if (device.inFlight > 0) await waitAsync(state, MmioWord.Doorbell, bell, 10);
  else Atomics.wait(state, MmioWord.Doorbell, bell, 50);
  wakeups++;
}
await device.reset();
clearInterval(keepAlive);
parentPort!.postMessage({ type: 'done', stats: { ...device.stats }, wakeups, needsReset });
