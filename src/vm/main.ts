// The VM page (index.html, what `npm start` opens): Linux boots in v86 with its root on the lab image
// (lab-disk.ts: a chunked HTTP image under an IndexedDB overlay), in an
// xterm.js terminal on the serial console, beside a live panel of the disk.
//
// The page says what is going on in one status line: what it is fetching,
// that the kernel is booting (and for how long so far), that the shell is
// ready — and, when something is missing, which command provisions it.
// `document.body.dataset.vm` holds the same state as a word (loading,
// booting, ready, stopped, error) for tests.
//
// The buttons' actions (boot, restart, reset, export) each stop, replace or
// read the disk, so they run one at a time: every one goes through
// `exclusive`, in click order, and while one runs every button is disabled
// and `document.body.dataset.action` names it. Without that, a reset
// clicked during an export closed the disk under the export, and the
// export's resume then ran the machine the reset had destroyed.
//
// Restart stops the machine and boots it again on the same overlay. Reset
// the overlay stops it, deletes the overlay's top and boots the shipped
// image. Export pauses the machine, streams the disk into a file in OPFS
// (src/transfer: never the whole image in memory) and offers it as a
// download, then lets the machine run on.
//
// The initramfs's `VBW-` lines (terminal.ts keeps them off the screen)
// become short notes in the terminal, and are kept, one per line, in
// `document.body.dataset.marks` for tests.

import { StorageError, StorageErrorCode } from '../backends/backend.ts';
import { exportToFile, offerDownload } from '../transfer/export.ts';
import { DiskPanel, formatBytes } from './disk-panel.ts';
import { openLabDisk, resetLabOverlay, type LabDisk } from './lab-disk.ts';
import { LAB_BOOT_FILES, LabMachine, PROVISION_COMMAND, fetchBootFile } from './machine.ts';
import { SerialTerminal } from './terminal.ts';

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el as T;
};
const ui = {
  status: $<HTMLDivElement>('status'),
  info: $<HTMLDivElement>('disk-info'),
  lastError: $<HTMLDivElement>('last-error'),
  action: $<HTMLDivElement>('action'),
  reset: $<HTMLButtonElement>('reset'),
  restart: $<HTMLButtonElement>('restart'),
  exportButton: $<HTMLButtonElement>('export'),
  exportProgress: $<HTMLProgressElement>('export-progress'),
};

/** The shell's prompt (PS1 in the image's /etc/profile: \u@\h:\w\$), at the end of the output. */
const PROMPT = /\w+@lab:[^\n]*[#$] $/;
/** Escape sequences (busybox's line editor asks for the cursor position after each prompt). */
const CSI = /\x1b\[[0-9;?]*[A-Za-z]/g;
/** What the kernel prints last when the guest runs `poweroff`, `halt` or `reboot` (pr_emerg: shown at loglevel=2). */
const GUEST_STOPPED = /reboot: (Power down|System halted)/;
const GUEST_REBOOTING = /reboot: Restarting system/;
const EXPORT_NAME = 'vm-lab-root.img';

type VmState = 'loading' | 'booting' | 'ready' | 'stopped' | 'error';
type Action = 'boot' | 'restart' | 'reset' | 'export';

const terminal = new SerialTerminal($('terminal'));
const panel = new DiskPanel($('panel'));
let machine: LabMachine | null = null;
let disk: LabDisk | null = null;
let bootedAt = 0;
let bootTicker: ReturnType<typeof setInterval> | null = null;
const marks: string[] = [];

function setState(state: VmState, message: string): void {
  document.body.dataset.vm = state;
  if (bootTicker && state !== 'booting') {
    clearInterval(bootTicker);
    bootTicker = null;
  }
  say(ui.status, message, state === 'error');
}

/** Show `message` in `el`; commands in it are between backquotes and shown as code. */
function say(el: HTMLElement, message: string, error = false): void {
  el.classList.toggle('error', error);
  el.replaceChildren(
    ...message.split('`').map((part, i) => {
      if (i % 2 === 0) return document.createTextNode(part);
      const code = document.createElement('code');
      code.textContent = part;
      return code;
    }),
  );
}

function describeError(err: unknown): string {
  if (err instanceof StorageError && err.code === StorageErrorCode.BaseMismatch) {
    return `The overlay in this browser was made over another build of the lab image (${err.message}). Reset the overlay to boot the current image.`;
  }
  if (err instanceof StorageError && err.code === StorageErrorCode.NotFound) {
    return `${err.message}: the lab image is not provisioned; run \`${PROVISION_COMMAND}\` (npm start runs it)`;
  }
  if (err instanceof StorageError && err.code === StorageErrorCode.InUse) {
    return 'The lab VM is open in another tab of this browser, which holds its disk. Close it there, then Restart the VM here.';
  }
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function updateButtons(): void {
  const busy = waiting > 0;
  ui.exportButton.disabled = busy || machine === null;
  ui.restart.disabled = busy;
  ui.reset.disabled = busy;
}

/**
 * Run `run` after every action clicked before it has finished (a failed one
 * too), with `data-action` naming it meanwhile. The buttons are disabled in
 * the click's own task, before the browser dispatches the next click.
 */
let actions: Promise<void> = Promise.resolve();
/** Actions queued or running. */
let waiting = 0;
function exclusive(name: Action, run: () => Promise<void>): Promise<void> {
  waiting++;
  updateButtons();
  const next = actions.then(async () => {
    document.body.dataset.action = name;
    try {
      await run();
    } finally {
      waiting--;
      delete document.body.dataset.action;
      updateButtons();
    }
  });
  actions = next.catch(() => undefined);
  return next;
}

function showDisk(d: LabDisk): void {
  const s = d.backend.state;
  ui.info.textContent =
    `${formatBytes(d.backend.size)} image ${d.identity.slice(0, 12)}… ` +
    `under ${d.freshTop ? 'a new' : 'its'} overlay: ${s.topBlocks} of ${s.blocks} blocks (${formatBytes(s.blockSize)} each) ` +
    `changed${s.zeroBlocks ? `, ${s.zeroBlocks} zeroed` : ''}${s.mapDirty ? ', map not yet flushed' : ''}.`;
}

function showBooting(): void {
  const seconds = Math.round((performance.now() - bootedAt) / 1000);
  setState('booting', `booting Linux: ${seconds} s so far (half a minute on an idle computer, a few minutes on a busy one)…`);
}

/** The initramfs's report lines, as a person would want them (null: nothing to say). */
function markNote(line: string): string | null {
  const [word, ...rest] = line.split(' ');
  const text = rest.join(' ');
  if (word === 'VBW-INIT') {
    const uptime = Number(/uptime=([\d.]+)/.exec(text)?.[1]);
    return `[lab] the kernel is up${Number.isFinite(uptime) ? ` after ${Math.round(uptime)} s` : ''}; loading the virtio-blk driver`;
  }
  if (word === 'VBW-INIT:') return `[lab] initramfs: ${text}`;
  if (word === 'VBW-DISK') {
    const m = /^(\S+) ro=(\d) sectors=(\d+)/.exec(text);
    if (!m) return null;
    return `[lab] /dev/${m[1]}: ${formatBytes(Number(m[3]) * 512)}, ${m[2] === '1' ? 'read-only' : 'read-write'}; mounting it as the root`;
  }
  if (word === 'VBW-FAIL') return `[lab] the initramfs stopped: ${text}`;
  return null;
}

terminal.onMark = (line) => {
  marks.push(line);
  document.body.dataset.marks = marks.join('\n');
  const note = markNote(line);
  if (note) terminal.note(note);
  if (line.startsWith('VBW-FAIL')) setState('error', `the guest's initramfs stopped (${line.slice('VBW-FAIL '.length)}); what it printed is in the terminal`);
};

terminal.onOutput = () => {
  const tail = terminal.transcript.slice(-200).replace(CSI, '');
  const state = document.body.dataset.vm;
  if (state === 'booting' && PROMPT.test(tail)) {
    terminal.hideMarks = false;
    const seconds = ((performance.now() - bootedAt) / 1000).toFixed(1);
    setState('ready', `shell ready after ${seconds} s: click the terminal and type. Files you write (then \`sync\`) survive a reload.`);
  } else if (state === 'ready' && GUEST_STOPPED.test(tail)) {
    setState('stopped', 'the guest has shut down: Restart the VM to boot it again (the disk is kept).');
  } else if (state === 'ready' && GUEST_REBOOTING.test(tail)) {
    terminal.hideMarks = true;
    startBootTicker();
  }
};

function startBootTicker(): void {
  bootedAt = performance.now();
  showBooting();
  bootTicker ??= setInterval(showBooting, 1000);
}

/** Open the disk and start the machine on it (the guest then boots on its own). */
async function start(): Promise<void> {
  ui.lastError.textContent = '';
  marks.length = 0;
  delete document.body.dataset.marks;
  terminal.hideMarks = true;
  setState('loading', 'fetching SeaBIOS, the kernel and the initramfs…');
  try {
    const [bios, kernel, initrd] = await Promise.all([
      fetchBootFile(LAB_BOOT_FILES.bios),
      fetchBootFile(LAB_BOOT_FILES.kernel),
      fetchBootFile(LAB_BOOT_FILES.initrd),
    ]);
    setState('loading', 'opening the disk (HTTP image under the overlay)…');
    const opened = await openLabDisk(() =>
      setState('loading', 'waiting for the disk: the page before this one (or another tab) still holds it…'),
    );
    disk = opened;
    showDisk(opened);
    const running = await LabMachine.start({
      bios,
      kernel,
      initrd,
      disk: opened.backend,
      onSerialByte: (b) => terminal.pushByte(b),
      onStorageError: (err) => {
        ui.lastError.textContent = `last I/O error: ${err.code}: ${err.message}`;
        console.error('lab disk:', err);
      },
    });
    machine = running;
    terminal.send = (data) => running.send(data);
    panel.watch({
      stats: () => {
        showDisk(opened);
        return running.stats();
      },
      image: () => opened.image.stats,
    });
    terminal.note("[lab] booting: SeaBIOS, then Debian's i386 kernel, with its root on /dev/vda\n      (this project's virtio-blk device)");
    startBootTicker();
  } catch (err) {
    if (disk && !machine) await disk.backend.close().catch(() => undefined);
    disk = null;
    setState('error', describeError(err));
    terminal.note(`[lab] ${describeError(err).replace(/`/g, '')}`);
  }
}

/** Stop the machine and close its disk; the panel and the disk line go blank. */
async function shutdown(): Promise<void> {
  panel.watch(null);
  ui.info.textContent = '';
  terminal.send = null;
  const m = machine;
  machine = null;
  disk = null;
  updateButtons();
  if (m) await m.stop();
}

/** Stop the machine, run `whileStopped`, clear the terminal and boot again; `what` names the action in an error. */
async function stopAndBoot(what: string, stopping: string, whileStopped: () => Promise<void>, bootNote: string): Promise<void> {
  setState('loading', stopping);
  say(ui.action, '');
  try {
    await shutdown();
    await whileStopped();
  } catch (err) {
    setState('error', `${what} failed: ${describeError(err)}`);
    return;
  }
  terminal.clear();
  terminal.note(bootNote);
  await start();
}

const restart = () => stopAndBoot('restart', 'stopping the VM…', async () => undefined, '[lab] restarted: booting again on the same disk');
const reset = () =>
  stopAndBoot('reset', 'stopping the VM and deleting the overlay…', resetLabOverlay, '[lab] overlay reset: booting the shipped image');

async function exportDisk(): Promise<void> {
  const d = disk;
  const m = machine;
  if (!d || !m) return;
  ui.exportProgress.hidden = false;
  ui.exportProgress.removeAttribute('value');
  say(ui.action, 'exporting: the VM is paused…');
  await m.pause();
  try {
    const file = await exportToFile(d.backend, EXPORT_NAME, {
      onProgress: (p) => {
        ui.exportProgress.max = p.totalBytes;
        ui.exportProgress.value = p.doneBytes;
        say(ui.action, `exporting: ${formatBytes(p.doneBytes)} of ${formatBytes(p.totalBytes)}; the VM is paused…`);
      },
    });
    offerDownload(file, EXPORT_NAME);
    say(ui.action, `exported ${formatBytes(file.size)} as ${EXPORT_NAME}: what the guest had written back (\`sync\` first for the rest). The VM runs on.`);
  } catch (err) {
    say(ui.action, `export failed: ${describeError(err)}. The VM runs on.`, true);
  } finally {
    ui.exportProgress.hidden = true;
    await m.resume();
  }
}

ui.restart.addEventListener('click', () => void exclusive('restart', restart));
ui.reset.addEventListener('click', () => {
  if (!confirm('Reset the overlay? Everything written to the disk in this browser is lost, and the VM boots the shipped image again.')) return;
  void exclusive('reset', reset);
});
ui.exportButton.addEventListener('click', () => void exclusive('export', exportDisk));

void exclusive('boot', start);
