// The native helper's watcher lifetime (native/vhost_user.c): unwatch() may
// be called twice, and after the handle closed, without touching freed memory.
// A plain run shows the calls return and later watchers still fire; the same
// file under valgrind (`valgrind node ...`) is what shows no invalid read.

import { writeSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../src/host/vhost-user/addon.ts';

const onLinux = process.platform === 'linux';

describe.runIf(onLinux)('vhost-user addon watchers', () => {
  it('a second unwatch of the same watcher, before and after its handle closed, does nothing', async () => {
    const addon = loadAddon();
    const fd = addon.eventfd();
    try {
      let fired = 0;
      const watcher = addon.watch(fd, () => fired++);
      addon.unwatch(watcher);
      addon.unwatch(watcher); // the handle is closing: still live memory
      await new Promise((resolve) => setImmediate(resolve));
      addon.unwatch(watcher); // the handle has closed: the external still owns it
      expect(fired).toBe(0);

      // The addon still works: a new watcher on a signalled eventfd fires.
      const ready = new Promise<number>((resolve) => {
        const again = addon.watch(fd, (events) => {
          addon.unwatch(again);
          addon.unwatch(again);
          resolve(events);
        });
      });
      signal(fd);
      expect((await ready) & 1).toBe(1); // UV_READABLE
    } finally {
      addon.close(fd);
    }
  });
});

/** Add 1 to an eventfd's counter (an 8-byte native-endian write). */
function signal(fd: number): void {
  writeSync(fd, new Uint8Array(new BigUint64Array([1n]).buffer));
}
