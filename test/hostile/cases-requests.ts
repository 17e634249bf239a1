// Hostile requests: framing, sector ranges, chains, indirect tables, guest
// addresses, DISCARD / WRITE_ZEROES and a read-only disk. Each case is named
// after the rule it enforces (hardening-rules.md numbers, or the virtio 1.2
// section).

import { BLK_DWZ_SEGMENT_BYTES, BlkFeature, BlkRequestType as T, BlkStatus as S } from '../../src/block/constants.ts';
import { VirtioFeature } from '../../src/virtio/device.ts';
import { check, fail, Indirect, Next, Write, type RawGuest, type Seg } from './guest.ts';
import type { HostileCase, Verdict } from './runner.ts';
import { SECTOR, describe, expectDiskData, malformed, refused, served } from './cases-support.ts';

const CAPACITY = (256 << 10) / SECTOR;

/** Submit a conventional request and return what came of it. */
async function req(g: RawGuest, type: number, sector: bigint | number, data: number[], writable: boolean, what: string) {
  const r = g.request(type, sector, data, writable);
  const head = g.chain(0, r.segs);
  const o = await g.submit(head, what);
  return { r, head, o };
}

/** Write 16-byte discard / write-zeroes segments into fresh RAM. */
function segments(g: RawGuest, list: ReadonlyArray<{ sector: bigint | number; sectors: number; flags?: number }>): number {
  const at = g.alloc(Math.max(16, list.length * BLK_DWZ_SEGMENT_BYTES));
  list.forEach((s, i) => {
    g.w64(at + 16 * i, s.sector);
    g.w32(at + 16 * i + 8, s.sectors);
    g.w32(at + 16 * i + 12, s.flags ?? 0);
  });
  return at;
}

/** DISCARD or WRITE_ZEROES over `payload` bytes at `at`; the disk must be unchanged when refused. */
async function dwz(g: RawGuest, type: number, at: number, payload: number, what: string, statuses: readonly number[]): Promise<Verdict> {
  const header = g.alloc(16);
  g.header(header, type, 0);
  const status = g.alloc(1);
  g.w8(status, 0xee);
  const segs: Seg[] = [{ addr: header, len: 16 }];
  if (payload > 0) segs.push({ addr: at, len: payload });
  segs.push({ addr: status, len: 1, write: true });
  const head = g.chain(0, segs);
  const o = await g.submit(head, what);
  const v = refused(g, o, head, { header, data: [], status, segs }, what, statuses);
  g.expectDiskUnchanged(what);
  return v;
}

const REFUSED = [S.IoErr, S.Unsupp];

export const requestCases: HostileCase[] = [
  // ---- framing (§5.2.6: any framing; the status is the last writable byte) ----
  {
    name: '§5.2.6 header split across three descriptors (4+4+8): the read is served',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 3, [512], true);
      const h = r.header;
      const head = g.chain(0, [{ addr: h, len: 4 }, { addr: h + 4, len: 4 }, { addr: h + 8, len: 8 }, ...r.segs.slice(1)]);
      const o = await g.submit(head, 'split-header read');
      const v = served(g, o, head, r, 513, 'split-header read');
      expectDiskData(g, 3, [[r.data[0]!, 512]], 'split-header read');
      return v;
    },
  },
  {
    name: '§5.2.6 header split 1+7+8 on a write: the data lands where the header says',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.Out, 5, [512], false);
      for (let i = 0; i < 512; i++) g.w8(r.data[0]! + i, (i * 13) & 0xff);
      const h = r.header;
      const head = g.chain(0, [{ addr: h, len: 1 }, { addr: h + 1, len: 7 }, { addr: h + 8, len: 8 }, ...r.segs.slice(1)]);
      const o = await g.submit(head, 'split-header write');
      const v = served(g, o, head, r, 1, 'split-header write');
      expectDiskData(g, 5, [[r.data[0]!, 512]], 'split-header write');
      return v;
    },
  },
  {
    name: '§5.2.6 header of 12 readable bytes: used.len 0, nothing written',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [512], true);
      r.segs[0] = { addr: r.header, len: 12 };
      const head = g.chain(0, r.segs);
      return malformed(g, await g.submit(head, 'short header'), head, 'short header', r.segs);
    },
  },
  {
    name: '§5.2.6 header of 15 bytes split 8+7 before the status: used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.Out, 0, [], false);
      const head = g.chain(0, [{ addr: r.header, len: 8 }, { addr: r.header + 8, len: 7 }, r.segs[1]!]);
      const v = malformed(g, await g.submit(head, '15-byte header'), head, '15-byte header', r.segs);
      g.expectDiskUnchanged('15-byte header');
      return v;
    },
  },
  {
    name: '§5.2.6 status descriptor missing (write with no device-writable byte): used.len 0, disk unchanged',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.Out, 2, [512], false);
      const head = g.chain(0, r.segs.slice(0, 2));
      const v = malformed(g, await g.submit(head, 'no status'), head, 'no status');
      g.expectDiskUnchanged('no status');
      return v;
    },
  },
  {
    name: '§2.7.4.2 status descriptor device-readable after writable data: used.len 0, nothing written',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [512], true);
      r.segs[2] = { addr: r.status, len: 1 };
      const head = g.chain(0, r.segs);
      return malformed(g, await g.submit(head, 'readable status'), head, 'readable status', r.segs);
    },
  },
  {
    name: '§5.2.6 status descriptor device-readable on a write: no writable byte, disk unchanged',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.Out, 2, [512], false);
      r.segs[2] = { addr: r.status, len: 1 };
      const head = g.chain(0, r.segs);
      const v = malformed(g, await g.submit(head, 'readable status on a write'), head, 'readable status on a write');
      g.expectDiskUnchanged('readable status on a write');
      return v;
    },
  },
  {
    name: '§5.2.6 status descriptor of length 0 on a read: refused (used.len 0, or IOERR in the last writable byte)',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [512], true);
      r.segs[2] = { addr: r.status, len: 0, write: true };
      const head = g.chain(0, r.segs);
      const o = await g.submit(head, 'zero-length status');
      check(o.used && !o.needsReset, `zero-length status: ${describe(o)}`);
      if (o.used.len === 0) return 'REJECT';
      // The last writable byte is then the data's last: 511 data bytes, not whole sectors.
      check(o.used.len === 1, `zero-length status: used.len ${o.used.len}`);
      check(g.r8(r.data[0]! + 511) === S.IoErr, `zero-length status: the last writable byte holds ${g.r8(r.data[0]! + 511)}, want IOERR`);
      return 'REJECT';
    },
  },
  {
    name: '§5.2.6 status descriptor of length 0 on a write: disk unchanged',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.Out, 2, [512], false);
      r.segs[2] = { addr: r.status, len: 0, write: true };
      const head = g.chain(0, r.segs);
      const v = malformed(g, await g.submit(head, 'zero-length status write'), head, 'zero-length status write');
      g.expectDiskUnchanged('zero-length status write');
      return v;
    },
  },
  // ---- sector ranges (§5.2.6.2) ----
  {
    name: '§5.2.6.2 read running one sector past the end: IOERR',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.In, CAPACITY - 1, [1024], true, 'read past the end');
      return refused(g, o, head, r, 'read past the end');
    },
  },
  {
    name: '§5.2.6.2 write at sector = capacity: IOERR, disk unchanged',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.Out, CAPACITY, [512], false, 'write at capacity');
      g.expectDiskUnchanged('write at capacity');
      return refused(g, o, head, r, 'write at capacity');
    },
  },
  {
    name: '§5.2.6.2 write at sector 2^64−1 (the end wraps u64): IOERR, disk unchanged',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.Out, 2n ** 64n - 1n, [1024], false, 'write at 2^64-1');
      g.expectDiskUnchanged('write at 2^64-1');
      return refused(g, o, head, r, 'write at 2^64-1');
    },
  },
  {
    name: '§5.2.6.2 write at sector 2^55 (sector × 512 wraps u64 to 0): IOERR, disk unchanged',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.Out, 2n ** 55n, [512], false, 'write at 2^55');
      g.expectDiskUnchanged('write at 2^55');
      return refused(g, o, head, r, 'write at 2^55');
    },
  },
  {
    name: '§5.2.6.2 read at sector 2^53+1 (not exact as a double): IOERR',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.In, 2n ** 53n + 1n, [512], true, 'read at 2^53+1');
      return refused(g, o, head, r, 'read at 2^53+1');
    },
  },
  {
    name: '§5.2.6.2 read of 511 bytes (not whole sectors): IOERR, used.len 1',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.In, 0, [511], true, '511-byte read');
      return refused(g, o, head, r, '511-byte read');
    },
  },
  {
    name: '§5.2.6.2 write of 513 bytes in two segments (512+1): IOERR, disk unchanged',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.Out, 0, [512, 1], false, '513-byte write');
      g.expectDiskUnchanged('513-byte write');
      return refused(g, o, head, r, '513-byte write');
    },
  },
  // ---- FLUSH and GET_ID ----
  {
    name: '§5.2.6.2 FLUSH carrying device-readable data: a status, used.len 1, disk unchanged',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.Flush, 0, [512], false, 'flush with data');
      g.expectDiskUnchanged('flush with data');
      check(o.used && !o.needsReset && o.used.id === head && o.used.len === 1, `flush with data: ${describe(o)}`);
      const s = g.r8(r.status);
      check(s === S.Ok || s === S.IoErr || s === S.Unsupp, `flush with data: status ${s}`);
      return s === S.Ok ? 'PASS' : 'REJECT';
    },
  },
  {
    name: '§5.2.6.2 FLUSH carrying device-writable data: a status, used.len 1',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.Flush, 0, [512], true, 'flush with writable data');
      check(o.used && !o.needsReset && o.used.id === head && o.used.len === 1, `flush with writable data: ${describe(o)}`);
      const s = g.r8(r.status);
      check(s === S.Ok || s === S.IoErr || s === S.Unsupp, `flush with writable data: status ${s}`);
      return s === S.Ok ? 'PASS' : 'REJECT';
    },
  },
  {
    name: '§5.2.6 GET_ID into an 8-byte buffer: the serial\'s first 8 bytes (or IOERR)',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.GetId, 0, [8], true, 'short GET_ID');
      check(o.used && !o.needsReset && o.used.id === head, `short GET_ID: ${describe(o)}`);
      if (g.r8(r.status) === S.IoErr) return refused(g, o, head, r, 'short GET_ID');
      served(g, o, head, r, 9, 'short GET_ID');
      const got = new TextDecoder().decode(g.bytes(r.data[0]!, 8));
      check(got === 'hostile-', `short GET_ID: "${got}"`);
      return 'PASS';
    },
  },
  {
    name: '§5.2.6 GET_ID with no data buffer (status only): OK or IOERR, used.len 1',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.GetId, 0, [], true, 'empty GET_ID');
      check(o.used && o.used.id === head && o.used.len === 1, `empty GET_ID: ${describe(o)}`);
      const s = g.r8(r.status);
      check(s === S.Ok || s === S.IoErr, `empty GET_ID: status ${s}`);
      return s === S.Ok ? 'PASS' : 'REJECT';
    },
  },
  {
    name: '§5.2.6 GET_ID into 512 bytes: 20 serial bytes, used.len 21',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.GetId, 0, [512], true, 'GET_ID');
      const v = served(g, o, head, r, 21, 'GET_ID');
      check(new TextDecoder().decode(g.bytes(r.data[0]!, 20)) === 'hostile-guest-suite!', 'GET_ID: wrong serial');
      return v;
    },
  },
  {
    name: '§5.2.6.1 unknown request type 0x7fffffff: UNSUPP',
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, 0x7fff_ffff, 0, [512], false, 'unknown type');
      g.expectDiskUnchanged('unknown type');
      return refused(g, o, head, r, 'unknown type', [S.Unsupp]);
    },
  },
  // ---- chains (§2.7.5.2) ----
  {
    name: '§2.7.5.2 descriptor loop 0 → 1 → 0: used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [512], true);
      g.desc(0, r.header, 16, Next, 1);
      g.desc(1, r.data[0]!, 512, Write | Next, 0);
      return malformed(g, await g.submit(0, 'loop'), 0, 'loop', r.segs);
    },
  },
  {
    name: '§2.7.5.2 a descriptor whose next is itself: used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [512], true);
      g.desc(0, r.header, 16, Next, 1);
      g.desc(1, r.data[0]!, 512, Write | Next, 1);
      return malformed(g, await g.submit(0, 'self loop'), 0, 'self loop', r.segs);
    },
  },
  {
    name: '§2.7.5.2 a chain of exactly queue-size descriptors is served',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 2, Array(14).fill(512), true);
      const head = g.chain(0, r.segs);
      const v = served(g, await g.submit(head, '16-descriptor chain'), head, r, 14 * 512 + 1, '16-descriptor chain');
      expectDiskData(g, 2, r.data.map((a) => [a, 512] as const), '16-descriptor chain');
      return v;
    },
  },
  {
    name: '§2.7.5.2 next = queue size: used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [512], true);
      g.desc(0, r.header, 16, Next, 16);
      return malformed(g, await g.submit(0, 'next out of range'), 0, 'next out of range', r.segs);
    },
  },
  // ---- indirect (§2.7.5.3) ----
  {
    name: 'Q1 (§2.7.5.3.1) an indirect table of exactly queue-size entries is served',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 1, Array(14).fill(512), true);
      const table = g.alloc(16 * 16);
      g.chain(0, r.segs, table);
      g.desc(3, table, 16 * 16, Indirect);
      const o = await g.submit(3, '16-entry indirect table');
      const v = served(g, o, 3, r, 14 * 512 + 1, '16-entry indirect table');
      expectDiskData(g, 1, r.data.map((a) => [a, 512] as const), '16-entry indirect table');
      return v;
    },
  },
  {
    name: 'Q1 an indirect table longer than the ring but within seg_max + 2 is served (Linux on a small ring)',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 1, Array(15).fill(512), true);
      const table = g.alloc(17 * 16);
      g.chain(0, r.segs, table);
      g.desc(3, table, 17 * 16, Indirect);
      const o = await g.submit(3, '17-entry indirect table');
      const v = served(g, o, 3, r, 15 * 512 + 1, '17-entry indirect table');
      expectDiskData(g, 1, r.data.map((a) => [a, 512] as const), '17-entry indirect table');
      return v;
    },
  },
  {
    name: 'Q1 (§2.7.5.3.1) an indirect table longer than the device can take (4096 entries): used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 1, [512], true);
      const table = g.alloc(4096 * 16);
      g.chain(0, r.segs, table);
      g.desc(3, table, 4096 * 16, Indirect);
      return malformed(g, await g.submit(3, '4096-entry indirect table'), 3, '4096-entry indirect table', r.segs);
    },
  },
  {
    name: 'Q2 (§2.7.5.3.1) an INDIRECT descriptor inside an indirect table: used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [512], true);
      const inner = g.alloc(48);
      g.chain(0, r.segs, inner);
      const outer = g.alloc(32);
      g.desc(0, inner, 48, Indirect, 0, outer);
      g.desc(0, outer, 32, Indirect);
      return malformed(g, await g.submit(0, 'nested indirect'), 0, 'nested indirect', r.segs);
    },
  },
  {
    name: 'Q2 (§2.7.5.3.1) an indirect table of length 0: used.len 0',
    async run(g) {
      await g.negotiate();
      g.desc(0, g.alloc(16), 0, Indirect);
      return malformed(g, await g.submit(0, 'indirect length 0'), 0, 'indirect length 0');
    },
  },
  {
    name: 'Q2 (§2.7.5.3.1) an indirect table of length 40 (not a multiple of 16): used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [512], true);
      const table = g.alloc(48);
      g.chain(0, r.segs, table);
      g.desc(0, table, 40, Indirect);
      return malformed(g, await g.submit(0, 'indirect length 40'), 0, 'indirect length 40', r.segs);
    },
  },
  {
    name: 'Q2 (§2.7.5.3.1) INDIRECT together with NEXT: used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [512], true);
      const table = g.alloc(48);
      g.chain(0, r.segs.slice(0, 2), table);
      g.desc(0, table, 32, Indirect | Next, 1);
      g.desc(1, r.status, 1, Write);
      return malformed(g, await g.submit(0, 'INDIRECT|NEXT'), 0, 'INDIRECT|NEXT', r.segs);
    },
  },
  {
    name: 'Q2 (§2.7.5.3.1) a direct header followed by one INDIRECT (data + status) is served',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 4, [512], true);
      const table = g.alloc(32);
      g.chain(0, r.segs.slice(1), table);
      g.desc(0, r.header, 16, Next, 1);
      g.desc(1, table, 32, Indirect);
      const v = served(g, await g.submit(0, 'direct + INDIRECT'), 0, r, 513, 'direct + INDIRECT');
      expectDiskData(g, 4, [[r.data[0]!, 512]], 'direct + INDIRECT');
      return v;
    },
  },
  {
    name: 'Q2 (§2.7.5.3.1) the WRITE flag on an INDIRECT descriptor is ignored: served, the table untouched',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 6, [512], true);
      const table = g.alloc(48);
      g.chain(0, r.segs, table);
      g.desc(0, table, 48, Indirect | Write);
      const v = served(g, await g.submit(0, 'INDIRECT|WRITE'), 0, r, 513, 'INDIRECT|WRITE');
      expectDiskData(g, 6, [[r.data[0]!, 512]], 'INDIRECT|WRITE');
      check(g.unchanged(table, 48), 'INDIRECT|WRITE: the indirect table was written');
      return v;
    },
  },
  {
    name: '§2.7.5.3.1 INDIRECT when VIRTIO_F_INDIRECT_DESC was not negotiated: used.len 0',
    async run(g) {
      await g.negotiate({ features: g.defaultFeatures() & ~(1n << VirtioFeature.RingIndirectDesc) });
      const r = g.request(T.In, 0, [512], true);
      const table = g.alloc(48);
      g.chain(0, r.segs, table);
      g.desc(0, table, 48, Indirect);
      return malformed(g, await g.submit(0, 'INDIRECT not negotiated'), 0, 'INDIRECT not negotiated', r.segs);
    },
  },
  {
    name: '§2.7.5.3.1 an indirect table reaching past the end of RAM: used.len 0',
    async run(g) {
      await g.negotiate();
      g.desc(0, g.end - 32, 48, Indirect);
      return malformed(g, await g.submit(0, 'indirect table past RAM'), 0, 'indirect table past RAM');
    },
  },
  {
    name: 'Q3 a chain of 1024 segments (beyond seg_max + 2): used.len 0, bounded work',
    options: { queueSize: 1024, ramBytes: 1 << 20 },
    async run(g) {
      await g.negotiate({ queueSize: 1024 });
      const header = g.alloc(16);
      g.header(header, T.GetId, 0);
      const bytes = g.alloc(1023);
      const segs: Seg[] = [{ addr: header, len: 16 }];
      for (let i = 0; i < 1023; i++) segs.push({ addr: bytes + i, len: 1, write: true });
      const table = g.alloc(1024 * 16);
      g.chain(0, segs, table);
      g.desc(0, table, 1024 * 16, Indirect);
      return malformed(g, await g.submit(0, '1024 segments'), 0, '1024 segments', segs);
    },
  },
  // ---- guest addresses (§2.7.5, end-inclusive) ----
  {
    name: '§2.7.5 a data buffer ending on the last byte of RAM is served',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 7, [], true);
      const data = g.end - 512;
      const head = g.chain(0, [r.segs[0]!, { addr: data, len: 512, write: true }, r.segs[1]!]);
      const v = served(g, await g.submit(head, 'buffer at the end of RAM'), head, r, 513, 'buffer at the end of RAM');
      expectDiskData(g, 7, [[data, 512]], 'buffer at the end of RAM');
      return v;
    },
  },
  {
    name: '§2.7.5 a data buffer one byte past the end of RAM: used.len 0, RAM unchanged',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 7, [], true);
      const seg = { addr: g.end - 511, len: 512, write: true };
      const head = g.chain(0, [r.segs[0]!, seg, r.segs[1]!]);
      return malformed(g, await g.submit(head, 'buffer past RAM'), head, 'buffer past RAM', [seg, r.segs[1]!]);
    },
  },
  {
    name: '§2.7.5 a write whose data buffer is one byte past the end of RAM: used.len 0, disk unchanged',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.Out, 7, [], false);
      const head = g.chain(0, [r.segs[0]!, { addr: g.end - 511, len: 512 }, r.segs[1]!]);
      const v = malformed(g, await g.submit(head, 'write past RAM'), head, 'write past RAM');
      g.expectDiskUnchanged('write past RAM');
      return v;
    },
  },
  {
    name: '§2.7.5 a buffer whose addr + len wraps 2^64: used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [], true);
      const head = g.chain(0, [r.segs[0]!, { addr: 2n ** 64n - 256n, len: 512, write: true }, r.segs[1]!]);
      return malformed(g, await g.submit(head, 'addr + len wraps'), head, 'addr + len wraps', r.segs);
    },
  },
  {
    name: '§2.7.5 a header at 2^64 − 8 (wrapping into RAM\'s low addresses): used.len 0, disk unchanged',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.Out, 0, [512], false);
      const head = g.chain(0, [{ addr: 2n ** 64n - 8n, len: 16 }, ...r.segs.slice(1)]);
      const v = malformed(g, await g.submit(head, 'wrapping header'), head, 'wrapping header', r.segs);
      g.expectDiskUnchanged('wrapping header');
      return v;
    },
  },
  {
    name: '§2.7.5 a buffer at guest address 0 (below RAM): used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [], true);
      const head = g.chain(0, [r.segs[0]!, { addr: 0, len: 512, write: true }, r.segs[1]!]);
      return malformed(g, await g.submit(head, 'buffer at 0'), head, 'buffer at 0', r.segs);
    },
  },
  {
    name: '§2.7.5 a buffer of 0xffffffff bytes from inside RAM: used.len 0',
    async run(g) {
      await g.negotiate();
      const r = g.request(T.In, 0, [], true);
      const head = g.chain(0, [r.segs[0]!, { addr: g.q.heap, len: 0xffff_ffff }, r.segs[1]!]);
      return malformed(g, await g.submit(head, 'huge buffer'), head, 'huge buffer', [r.segs[1]!]);
    },
  },
  // ---- DISCARD / WRITE_ZEROES (§5.2.6.2) ----
  {
    name: '§5.2.6.2 DISCARD with the UNMAP flag: UNSUPP, disk unchanged',
    async run(g) {
      await g.negotiate();
      return dwz(g, T.Discard, segments(g, [{ sector: 8, sectors: 2, flags: 1 }]), 16, 'DISCARD+UNMAP', [S.Unsupp]);
    },
  },
  {
    name: '§5.2.6.2 DISCARD with an unknown flag (bit 1): UNSUPP, disk unchanged',
    async run(g) {
      await g.negotiate();
      return dwz(g, T.Discard, segments(g, [{ sector: 8, sectors: 2, flags: 2 }]), 16, 'DISCARD flag 2', [S.Unsupp]);
    },
  },
  {
    name: '§5.2.6.2 WRITE_ZEROES with an unknown flag (bit 31): UNSUPP, disk unchanged',
    async run(g) {
      await g.negotiate();
      return dwz(g, T.WriteZeroes, segments(g, [{ sector: 8, sectors: 2, flags: 0x8000_0001 }]), 16, 'WRITE_ZEROES flag 31', [S.Unsupp]);
    },
  },
  {
    name: '§5.2.6.2 DISCARD without any segment: refused, disk unchanged',
    async run(g) {
      await g.negotiate();
      return dwz(g, T.Discard, 0, 0, 'DISCARD without segments', REFUSED);
    },
  },
  {
    name: '§5.2.6.2 WRITE_ZEROES with a 20-byte payload (not whole segments): refused, disk unchanged',
    async run(g) {
      await g.negotiate();
      return dwz(g, T.WriteZeroes, segments(g, [{ sector: 8, sectors: 2 }, { sector: 9, sectors: 1 }]), 20, 'WRITE_ZEROES 20 bytes', REFUSED);
    },
  },
  {
    name: '§5.2.6.2 DISCARD with more segments than max_discard_seg (33): refused, disk unchanged',
    async run(g) {
      await g.negotiate();
      const list = Array.from({ length: 33 }, (_, i) => ({ sector: i * 2, sectors: 1 }));
      return dwz(g, T.Discard, segments(g, list), 33 * 16, 'DISCARD 33 segments', REFUSED);
    },
  },
  {
    name: '§5.2.6.2 WRITE_ZEROES running past the end of the disk: refused, disk unchanged',
    async run(g) {
      await g.negotiate();
      return dwz(g, T.WriteZeroes, segments(g, [{ sector: CAPACITY - 1, sectors: 2 }]), 16, 'WRITE_ZEROES past the end', REFUSED);
    },
  },
  {
    name: '§5.2.6.2 DISCARD at sector 2^64−1 of 2 sectors (u64 wrap): refused, disk unchanged',
    async run(g) {
      await g.negotiate();
      return dwz(g, T.Discard, segments(g, [{ sector: 2n ** 64n - 1n, sectors: 2 }]), 16, 'DISCARD wrap', REFUSED);
    },
  },
  {
    name: '§5.2.6.2 WRITE_ZEROES at sector 2^55 (byte offset wraps u64 to 0): refused, disk unchanged',
    async run(g) {
      await g.negotiate();
      return dwz(g, T.WriteZeroes, segments(g, [{ sector: 2n ** 55n, sectors: 1 }]), 16, 'WRITE_ZEROES 2^55', REFUSED);
    },
  },
  {
    name: '§5.2.6.2 a valid segment followed by an invalid one: the whole request refused, disk unchanged',
    async run(g) {
      await g.negotiate();
      return dwz(g, T.WriteZeroes, segments(g, [{ sector: 8, sectors: 2 }, { sector: CAPACITY, sectors: 1 }]), 32, 'valid then invalid', REFUSED);
    },
  },
  {
    name: '§5.2.6.2 WRITE_ZEROES (UNMAP) with segments split across descriptors: zeroes read back, nothing else changes',
    async run(g) {
      await g.negotiate();
      const at = segments(g, [{ sector: 10, sectors: 3, flags: 1 }, { sector: 20, sectors: 1 }]);
      const header = g.alloc(16);
      g.header(header, T.WriteZeroes, 0);
      const status = g.alloc(1);
      const segs: Seg[] = [{ addr: header, len: 16 }, { addr: at, len: 8 }, { addr: at + 8, len: 12 }, { addr: at + 20, len: 12 }, { addr: status, len: 1, write: true }];
      const head = g.chain(0, segs);
      const v = served(g, await g.submit(head, 'split WRITE_ZEROES'), head, { header, data: [], status, segs }, 1, 'split WRITE_ZEROES');
      const d = g.t.disk;
      for (let i = 0; i < d.length; i++) {
        const s = Math.floor(i / SECTOR);
        const zero = (s >= 10 && s < 13) || s === 20;
        if (zero ? d[i] !== 0 : d[i] !== g.diskBefore[i]) fail(`split WRITE_ZEROES: disk byte ${i} is ${d[i]}`);
      }
      return v;
    },
  },
  {
    name: 'B3 DISCARD segments rewritten after notify, before the async backend finishes: the validated copy is applied',
    options: { gateOps: ['discard', 'writeZeroes'] },
    async run(g) {
      await g.negotiate();
      const at = segments(g, [{ sector: 8, sectors: 2 }, { sector: 16, sectors: 2 }]);
      const header = g.alloc(16);
      g.header(header, T.Discard, 0);
      const status = g.alloc(1);
      const segs: Seg[] = [{ addr: header, len: 16 }, { addr: at, len: 32 }, { addr: status, len: 1, write: true }];
      const head = g.chain(0, segs);
      g.offer(head);
      g.notify();
      check(await g.t.gate!.waitStarted(1, g.t.hangMs), 'B3: the first discard never reached the backend');
      // The guest rewrites both segments while the first is still running.
      g.w64(at, 0);
      g.w32(at + 8, 4);
      g.w64(at + 16, 0);
      g.w32(at + 24, 0xffff);
      g.w32(at + 28, 0xff);
      g.t.gate!.open();
      const v = served(g, await g.outcome('B3 discard'), head, { header, data: [], status, segs }, 1, 'B3 discard');
      const d = g.t.disk;
      for (let i = 0; i < d.length; i++) {
        const s = Math.floor(i / SECTOR);
        const zero = (s >= 8 && s < 10) || (s >= 16 && s < 18);
        if (zero ? d[i] !== 0 : d[i] !== g.diskBefore[i]) fail(`B3: disk sector ${s} ${zero ? 'not discarded' : 'changed'} (byte ${i})`);
      }
      return v;
    },
  },
  {
    name: 'B4 write-through (FLUSH not negotiated): WRITE_ZEROES is flushed before it completes',
    options: { gateOps: ['flush'] },
    async run(g) {
      await g.negotiate({ features: g.defaultFeatures() & ~(1n << BlkFeature.Flush) & ~(1n << BlkFeature.ConfigWce) });
      const at = segments(g, [{ sector: 30, sectors: 1 }]);
      const header = g.alloc(16);
      g.header(header, T.WriteZeroes, 0);
      const status = g.alloc(1);
      const segs: Seg[] = [{ addr: header, len: 16 }, { addr: at, len: 16 }, { addr: status, len: 1, write: true }];
      const head = g.chain(0, segs);
      g.offer(head);
      g.notify();
      const gate = g.t.gate!;
      check(await g.waitFor(() => gate.started > 0 || g.usedIdx() !== g.lastUsed), 'B4: neither a flush nor a completion');
      check(gate.started > 0, 'B4: WRITE_ZEROES completed in write-through mode without a flush');
      check(g.usedIdx() === g.lastUsed, 'B4: completed before its flush finished');
      gate.open();
      return served(g, await g.outcome('B4'), head, { header, data: [], status, segs }, 1, 'B4');
    },
  },
  // ---- a read-only disk (§5.2.6.2) ----
  {
    name: '§5.2.6.2 read-only disk: a write is refused with IOERR, disk unchanged',
    options: { readOnly: true },
    async run(g) {
      await g.negotiate();
      check(g.offered() & (1n << BlkFeature.Ro), 'read-only disk: VIRTIO_BLK_F_RO not offered');
      const { r, head, o } = await req(g, T.Out, 0, [1024], false, 'read-only write');
      g.expectDiskUnchanged('read-only write');
      return refused(g, o, head, r, 'read-only write');
    },
  },
  {
    name: '§5.2.6.2 read-only disk: DISCARD and WRITE_ZEROES are refused, disk unchanged',
    options: { readOnly: true },
    async run(g) {
      await g.negotiate();
      await dwz(g, T.Discard, segments(g, [{ sector: 0, sectors: 8 }]), 16, 'read-only DISCARD', REFUSED);
      return dwz(g, T.WriteZeroes, segments(g, [{ sector: 0, sectors: 8 }]), 16, 'read-only WRITE_ZEROES', REFUSED);
    },
  },
  {
    name: '§5.2.6.2 read-only disk: reads are served',
    options: { readOnly: true },
    async run(g) {
      await g.negotiate();
      const { r, head, o } = await req(g, T.In, 9, [512, 512], true, 'read-only read');
      const v = served(g, o, head, r, 1025, 'read-only read');
      expectDiskData(g, 9, r.data.map((a) => [a, 512] as const), 'read-only read');
      return v;
    },
  },
];
