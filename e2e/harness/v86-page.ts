// The v86 harness page: boots a guest on the page itself or in a dedicated
// worker (v86-worker.ts) and exposes it to Playwright as `window.v86Harness`.
// A result's disk image, when asked for, leaves as a download, which the
// test saves and checks on the host (the image is tens of MiB: too large to
// pass through page.evaluate).

import { boot, type BootConfig, type BootResult } from './v86-guest.ts';
import { connect, type HarnessClient } from './rpc.ts';

export type Where = 'page' | 'worker';

export interface V86Harness {
  boot(config: BootConfig, where: Where): Promise<Omit<BootResult, 'image'> & { exported: boolean }>;
}

declare global {
  interface Window {
    v86Harness?: V86Harness;
  }
}

let worker: HarnessClient | undefined;

function download(image: ArrayBuffer, name: string): void {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([image]));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

window.v86Harness = {
  async boot(config, where) {
    let result: BootResult;
    if (where === 'worker') {
      worker ??= await connect(new Worker(new URL('./v86-worker.ts', import.meta.url), { type: 'module' }));
      result = await worker.call<BootResult>('boot', config);
    } else {
      result = await boot(config);
    }
    const { image, ...rest } = result;
    if (image) download(image, 'disk.img');
    return { ...rest, exported: image !== undefined };
  },
};
document.body.dataset.ready = 'true';
