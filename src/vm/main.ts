// The VM page (index.html, what `npm start` opens): Linux boots in v86 with its root on the lab image
// (lab-disk.ts: a chunked HTTP image under an IndexedDB overlay), in an
// xterm.js terminal on the serial console, beside a live panel of the disk.
//
// The page says what is going on in one status line: what it is fetching,
// that the kernel is booting, that the shell is ready — and, when something
// is missing, which command provisions it. `document.body.dataset.vm` holds
// the same state as a word (loading, booting, ready, error) for tests.
//
// Reset the overlay stops the machine, deletes the overlay's top and boots
// again on the shipped image; Export pauses the machine, streams the disk
// into a file in OPFS (src/transfer: never the whole image in memory) and
// offers it as a download, then lets the machine run on.

import { StorageError, StorageErrorCode } from '../backends/backend.ts';
import { exportToFile, offerDownload } from '../transfer/export.ts';
import { DiskPanel } from './disk-panel.ts';
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
  reset: $<HTMLButtonElement>('reset'),
  exportButton: $<HTMLButtonElement>('export'),
  exportProgress: $<HTMLProgressElement>('export-progress'),
};

/** The shell's prompt (PS1 in the image's /etc/profile: \u@\h:\w\$), at the end of the output. */
const PROMPT = /\w+@lab:[^\n]*[#$] $/;
/** Escape sequences (busybox's line editor asks for the cursor position after each prompt). */
const CSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

type VmState = 'loading' | 'booting' | 'ready' | 'error' | 'stopped';

const terminal = new SerialTerminal($('terminal'));
const panel = new DiskPanel($('panel'));
let machine: LabMachine | null = null;
let disk: LabDisk | null = null;
let bootedAt = 0;

function setState(state: VmState, message: string): void {
  document.body.dataset.vm = state;
  ui.status.classList.toggle('error', state === 'error');
  // Commands in a message are between backquotes; show them as code.
  ui.status.replaceChildren(
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
    return `${err.message}: the lab VM is open in another tab; close it there first.`;
  }
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function showDisk(d: LabDisk): void {
  const s = d.backend.state;
  ui.info.textContent =
    `${(d.backend.size / 2 ** 20).toFixed(0)} MiB image ${d.identity.slice(0, 12)}… ` +
    `under ${d.freshTop ? 'a new' : 'its'} overlay: ${s.topBlocks} of ${s.blocks} blocks (${s.blockSize / 1024} KiB) ` +
    `changed${s.zeroBlocks ? `, ${s.zeroBlocks} zeroed` : ''}${s.mapDirty ? ', map not yet flushed' : ''}.`;
}

async function boot(): Promise<void> {
  ui.reset.disabled = true;
  ui.exportButton.disabled = true;
  setState('loading', 'fetching SeaBIOS, the kernel and the initramfs…');
  try {
    const [bios, kernel, initrd] = await Promise.all([
      fetchBootFile(LAB_BOOT_FILES.bios),
      fetchBootFile(LAB_BOOT_FILES.kernel),
      fetchBootFile(LAB_BOOT_FILES.initrd),
    ]);
    setState('loading', 'opening the disk (HTTP image under the overlay)…');
    disk = await openLabDisk();
    showDisk(disk);
    const opened = disk;
    machine = await LabMachine.start({
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
    bootedAt = performance.now();
    terminal.send = (data) => machine?.send(data);
    const running = machine;
    panel.watch({
      stats: () => {
        showDisk(opened);
        return running.stats();
      },
      image: () => opened.image.stats,
    });
    terminal.note('[lab] SeaBIOS → Linux (Debian i386) → root on /dev/vda, this project\'s virtio-blk; half a minute to two minutes, by how busy the machine is');
    setState('booting', 'booting Linux…');
    ui.exportButton.disabled = false;
  } catch (err) {
    setState('error', describeError(err));
    terminal.note(`[lab] ${describeError(err)}`);
  } finally {
    // A reset is how a person gets out of a base mismatch, so it stays offered.
    ui.reset.disabled = false;
  }
}

terminal.onOutput = () => {
  if (document.body.dataset.vm !== 'booting' || !PROMPT.test(terminal.transcript.slice(-200).replace(CSI, ''))) return;
  const seconds = ((performance.now() - bootedAt) / 1000).toFixed(1);
  setState('ready', `shell ready after ${seconds} s: click the terminal and type. Files you write (then \`sync\`) survive a reload.`);
};

async function shutdown(): Promise<void> {
  panel.watch(null);
  terminal.send = null;
  const m = machine;
  machine = null;
  disk = null;
  if (m) await m.stop();
}

ui.reset.addEventListener('click', async () => {
  if (!confirm('Reset the overlay? Everything written to the disk in this browser is lost, and the VM boots the shipped image again.')) return;
  ui.reset.disabled = true;
  setState('loading', 'stopping the VM and deleting the overlay…');
  try {
    await shutdown();
    await resetLabOverlay();
    terminal.term.reset();
    terminal.note('[lab] overlay reset: booting the shipped image');
    await boot();
  } catch (err) {
    setState('error', describeError(err));
    ui.reset.disabled = false;
  }
});

ui.exportButton.addEventListener('click', async () => {
  const d = disk;
  const m = machine;
  if (!d || !m) return;
  ui.exportButton.disabled = true;
  ui.exportProgress.hidden = false;
  ui.exportProgress.removeAttribute('value');
  const before = document.body.dataset.vm as VmState;
  await m.pause();
  try {
    const file = await exportToFile(d.backend, 'vm-lab-root.img', {
      onProgress: (p) => {
        ui.exportProgress.max = p.totalBytes;
        ui.exportProgress.value = p.doneBytes;
      },
    });
    offerDownload(file, 'vm-lab-root.img');
    setState(before, `exported ${(file.size / 2 ** 20).toFixed(0)} MiB as vm-lab-root.img: what the guest had written back (\`sync\` first for the rest). The VM runs on.`);
  } catch (err) {
    setState('error', `export failed: ${describeError(err)}`);
  } finally {
    await m.resume();
    ui.exportProgress.hidden = true;
    ui.exportButton.disabled = false;
  }
});

void boot();
