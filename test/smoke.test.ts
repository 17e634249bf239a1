import { describe, expect, it } from 'vitest';
import { makeRig, pattern } from './support/rig.ts';

describe('smoke', () => {
  it('writes and reads back through the whole path', async () => {
    const { driver } = await makeRig();
    const data = pattern(8192, 1);
    await driver.write(8, data);
    expect(await driver.read(8, 8192)).toEqual(data);
    await driver.flush();
    expect(await driver.getId()).toBe('virtio-blk-web');
  });
});
