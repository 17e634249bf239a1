// Run under tsx in its own process (test/allocation.test.ts): vitest's module
// runner rewrites imports into getter calls that themselves allocate, so the
// device's code is measured as Node and browsers load it.
//
// V8's sampling heap profiler, counting objects the GC already collected too,
// watches 4 KiB reads at depth 32 through the same-thread host, after a
// warm-up that lets the JIT optimise the path. Prints JSON: the requests, the
// bad statuses and the sampled bytes charged to each source file (the
// nearest frame that has one).

import { Session } from 'node:inspector/promises';
import type { BlockBackend } from '../../src/backends/backend.ts';
import { MemoryBackend } from '../../src/backends/memory.ts';
import { BlkRequestType, BlkStatus } from '../../src/block/constants.ts';
import { VirtioBlkDriver } from '../../src/driver/driver.ts';
import { createSameThreadDisk } from '../../src/host/browser/same-thread.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';

const RAM_BASE = 0x4000_0000;
const QD = 32;

/** Reads fill with a byte, writes vanish: a backend that allocates nothing itself. */
const fillBackend: BlockBackend = {
  size: 64 << 20,
  readOnly: false,
  supportsDiscard: false,
  supportsWriteZeroes: false,
  read: (_offset, dst) => void dst.fill(0x5a),
  write: () => {},
  discard: () => {},
  writeZeroes: () => {},
  flush: () => {},
  close: () => {},
};

interface ProfileNode {
  callFrame: { functionName: string; url: string };
  selfSize: number;
  children?: ProfileNode[];
}

function byFile(node: ProfileNode, owner: string, out: Record<string, number>): Record<string, number> {
  const here = node.callFrame.url || owner;
  if (node.selfSize) out[here] = (out[here] ?? 0) + node.selfSize;
  for (const c of node.children ?? []) byFile(c, here, out);
  return out;
}

const backend = process.argv.includes('--memory-backend') ? new MemoryBackend(64 << 20) : fillBackend;
const ram = new SharedArrayBuffer(8 << 20);
const memory = new GuestMemory([{ guestAddress: RAM_BASE, source: ram }]);
const disk = createSameThreadDisk({ memory, backend });
const driver = await VirtioBlkDriver.init({ mmio: disk.mmio, memory, arena: { addr: RAM_BASE, len: 8 << 20 } });
const reqs = Array.from({ length: QD }, () => ({ type: BlkRequestType.In, sector: 0, in: [driver.allocate(4096)] }));
let seed = 1;
let bad = 0;
function round(): number {
  for (const r of reqs) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    r.sector = (seed % 16384) * 8;
    driver.submit(r);
  }
  driver.kick();
  const done = driver.reap();
  for (const c of done) if (c.status !== BlkStatus.Ok) bad++;
  return done.length;
}

for (let i = 0; i < 5000; i++) round();
const session = new Session();
session.connect();
await session.post('HeapProfiler.enable');
await session.post('HeapProfiler.startSampling', {
  samplingInterval: 256,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
});
let requests = 0;
for (let i = 0; i < 10_000; i++) requests += round();
const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: ProfileNode } };
session.disconnect();
process.stdout.write(`${JSON.stringify({ requests, bad, bytesByFile: byFile(profile.head, '(native)', {}) })}\n`);
