// Runs one hostile case and gives it a verdict.
//
// PASS: the device completed the request with a sensible status and used.len.
// REJECT: it refused (used.len 0, an error status, DEVICE_NEEDS_RESET, a
// register write ignored) and, after a reset, serves a well-formed request.
// WEDGED: it stopped serving, hung, or needed more than a reset.
// FAIL: an exception reached the host, the device wrote guest RAM outside the
// device-writable buffers the case gave it, a refused request changed the
// disk, or data came back wrong.
//
// After every case, whatever its verdict: the canary check over all of guest
// RAM, then a reset and a well-formed read whose data is checked against the
// disk. Every wait is bounded (Target.hangMs). Environment-neutral.

import { BlkRequestType, BlkStatus } from '../../src/block/constants.ts';
import { MmioReg } from '../../src/virtio/mmio/mmio.ts';
import { CaseFailure, LIVE, RawGuest } from './guest.ts';
import { fillDisk, type TargetFactory, type TargetOptions } from './target.ts';

export type Verdict = 'PASS' | 'REJECT';
export type ResultKind = Verdict | 'FAIL' | 'WEDGED';

export interface HostileCase {
  /** Starts with the rule it enforces (R1…, Q1…, B1…, or the spec's own). */
  readonly name: string;
  readonly options?: TargetOptions;
  /** Same-thread only (it steps the device deterministically). */
  readonly sameThreadOnly?: boolean;
  run(g: RawGuest): Promise<Verdict>;
}

export interface CaseResult {
  name: string;
  kind: ResultKind;
  detail: string;
}

/** The well-formed request every case ends with: two sectors from sector 1, data checked. */
export async function expectServes(g: RawGuest, what: string): Promise<void> {
  await g.negotiate();
  const r = g.request(BlkRequestType.In, 1, [1024], true);
  const head = g.chain(0, r.segs);
  const o = await g.submit(head, what);
  if (!o.used) throw new CaseFailure('WEDGED', `${what}: DEVICE_NEEDS_RESET on a well-formed read`);
  if (o.used.id !== head || o.used.len !== 1025) {
    throw new CaseFailure('WEDGED', `${what}: used ${JSON.stringify(o.used)} for a well-formed read (want {id: ${head}, len: 1025})`);
  }
  if (g.r8(r.status) !== BlkStatus.Ok) throw new CaseFailure('WEDGED', `${what}: status ${g.r8(r.status)}`);
  const got = g.bytes(r.data[0]!, 1024);
  const want = g.t.disk.subarray(512, 1536);
  for (let i = 0; i < 1024; i++) {
    if (got[i] !== want[i]) throw new CaseFailure('FAIL', `${what}: wrong data at byte ${i} of a well-formed read`);
  }
  if (g.status !== LIVE) throw new CaseFailure('WEDGED', `${what}: status 0x${g.status.toString(16)}`);
}

function canary(g: RawGuest, when: string): void {
  const bad = g.canaryViolations();
  if (bad.length) throw new CaseFailure('FAIL', `${when}: the device wrote guest RAM it was not given: ${bad.join(', ')}`);
}

function hostErrors(g: RawGuest): void {
  if (g.t.hostErrors.length) throw new CaseFailure('FAIL', `an exception reached the host: ${g.t.hostErrors[0]}`);
}

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CaseFailure('WEDGED', `${what} did not finish`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A whole case (and the reset and serve after it) may take this many hangMs before it is WEDGED.
 * Each wait inside is bounded by hangMs itself; this bound only catches what no wait covers, so it
 * is wide: the EVENT_IDX wrap case submits about 65,700 requests, and took 8.8 s (over 4 × 2000 ms)
 * beside other suites on 2 cores at load average 50 to 78.
 */
const CASE_HANGS = 15;

export async function runCase(factory: TargetFactory, c: HostileCase): Promise<CaseResult> {
  const t = await factory(c.options ?? {});
  const g = new RawGuest(t);
  fillDisk(t.disk);
  g.diskBefore.set(t.disk);
  let kind: ResultKind;
  let detail = '';
  try {
    kind = await bounded(c.run(g), CASE_HANGS * t.hangMs, 'the case');
    hostErrors(g);
    canary(g, 'during the case');
    // Reuse: a held backend lets go, then reset and serve.
    t.gate?.open();
    await bounded(expectServes(g, 'after a reset'), CASE_HANGS * t.hangMs, 'reset and serve');
    hostErrors(g);
    canary(g, 'after the reset');
    if (g.reg(MmioReg.MagicValue) !== 0x74726976) throw new CaseFailure('FAIL', 'MagicValue changed');
  } catch (err) {
    if (err instanceof CaseFailure) {
      kind = err.kind;
      detail = err.message;
    } else {
      kind = 'FAIL';
      detail = `the case threw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
    }
  } finally {
    t.gate?.open();
    await bounded(t.close(), t.hangMs, 'close').catch(() => undefined);
  }
  return { name: c.name, kind, detail };
}
