// When a v86 boot in the harness (e2e/harness/v86-guest.ts) times out, this
// makes it explain itself: the adapter's diagnosis of the disk (where every
// request and interrupt stands, src/host/v86/diagnosis.ts) and the
// backend's cache state if it has one; then whether the disk still moves
// on its own (a boot merely slow on a loaded machine does: at load 40 two
// boots timed out in the middle of the guest's writes); only if not, one
// kick of what the diagnosis names and whether the guest moved after it. A
// guest that moves on after a kick of its interrupt lost a wake-up; one
// that stays silent with nothing pending on the disk is stuck elsewhere.
//
// Runs in the browser (page or worker) beside the emulator; costs nothing
// unless a boot stalls.

import { formatDiagnosis, type V86DiskDiagnosis, type V86VirtioBlk } from '../../src/host/v86/index.ts';

/** How long the disk is watched, before and after a kick, before the boot is stopped. */
const KICK_WAIT_MS = 10_000;

interface SerialSource {
  add_listener(event: 'serial0-output-byte', listener: (byte: number) => void): void;
  remove_listener(event: 'serial0-output-byte', listener: (byte: number) => void): void;
}

/** Resolves with what the guest printed within `ms` of now, as soon as it prints a whole line (or '' on timeout). */
function nextLine(emulator: SerialSource, ms: number): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const done = (): void => {
      clearTimeout(timer);
      emulator.remove_listener('serial0-output-byte', listen);
      resolve(text);
    };
    const listen = (byte: number): void => {
      text += String.fromCharCode(byte);
      if (byte === 0x0a) done();
    };
    const timer = setTimeout(done, ms);
    emulator.add_listener('serial0-output-byte', listen);
  });
}

/** Requests the disk completed and guest lines printed between two moments. */
function progress(before: V86DiskDiagnosis, after: V86DiskDiagnosis, printed: string): string | null {
  const completed = after.device.completed - before.device.completed;
  if (completed === 0 && printed === '') return null;
  return `${completed} request(s) completed in ${Math.round((after.atMs - before.atMs) / 1000)} s${printed ? `, the guest printed ${JSON.stringify(printed)}` : ''}`;
}

/**
 * The diagnosis of a boot that timed out, in three steps: look, then watch
 * the disk for a while without touching anything (a guest merely slow on a
 * loaded machine still completes requests: no kick then), and only if
 * nothing moved kick what the diagnosis names and watch again.
 */
export async function explainStall(emulator: SerialSource, attached: V86VirtioBlk, backend: unknown): Promise<string> {
  const cacheState = (): string => {
    const cache = (backend as { cacheState?: unknown }).cacheState;
    return cache === undefined ? '' : `\nbackend cache: ${JSON.stringify(cache)}`;
  };
  const first = attached.diagnose();
  const lines = ['---- disk diagnosis at the timeout ----', formatDiagnosis(first) + cacheState()];
  let printed = await nextLine(emulator, KICK_WAIT_MS);
  const watched = attached.diagnose();
  const moved = progress(first, watched, printed);
  if (moved !== null) {
    lines.push(`not stalled, slow: untouched, ${moved}`);
    return lines.join('\n');
  }
  lines.push(`stalled: untouched for ${KICK_WAIT_MS / 1000} s, no request completed and the guest printed nothing`);
  if (watched.kick === null) {
    lines.push(`no kick: ${watched.verdict}`);
    return lines.join('\n');
  }
  const reaction = nextLine(emulator, KICK_WAIT_MS);
  attached.kick(watched.kick);
  printed = await reaction;
  const after = attached.diagnose();
  const kicked = progress(watched, after, printed);
  lines.push(
    kicked === null ? `kicked the ${watched.kick}: nothing moved in ${KICK_WAIT_MS / 1000} s` : `kicked the ${watched.kick}: the guest moved on, ${kicked}`,
    '---- after the kick ----',
    formatDiagnosis(after) + cacheState(),
  );
  return lines.join('\n');
}
