// The device-tree and command-line helpers emit what QEMU's aarch64 `virt`
// and Linux expect.

import { describe, expect, test } from 'vitest';
import {
  IrqTrigger,
  kernelCommandLine,
  virtioMmioCmdlineDevice,
  virtioMmioDts,
  virtioMmioFdtProperties,
} from '../src/virtio/mmio/devicetree.ts';

describe('device tree node', () => {
  test('DTS text for the first virt slot', () => {
    expect(virtioMmioDts({ baseAddress: 0x0a00_0000, spi: 16, trigger: IrqTrigger.EdgeRising })).toBe(
      [
        'virtio_mmio@a000000 {',
        '\tcompatible = "virtio,mmio";',
        '\treg = <0x0 0xa000000 0x0 0x200>;',
        '\tinterrupts = <0x0 0x10 0x1>;',
        '\tdma-coherent;',
        '};',
      ].join('\n'),
    );
  });

  test('addresses above 4 GiB split into two cells, and dma-coherent can be left out', () => {
    const dts = virtioMmioDts({ baseAddress: 0x1_2345_6000, spi: 40, dmaCoherent: false });
    expect(dts).toContain('reg = <0x1 0x23456000 0x0 0x200>;');
    expect(dts).toContain('interrupts = <0x0 0x28 0x4>;');
    expect(dts).not.toContain('dma-coherent');
  });

  test('FDT properties are big-endian cells and a NUL-terminated compatible', () => {
    const props = virtioMmioFdtProperties({ baseAddress: 0x0a00_0200, spi: 17 });
    const byName = Object.fromEntries(props.map((p) => [p.name, Array.from(p.value)]));
    expect(byName.compatible).toEqual([...new TextEncoder().encode('virtio,mmio'), 0]);
    expect(byName.reg).toEqual([0, 0, 0, 0, 0x0a, 0x00, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0x02, 0x00]);
    expect(byName.interrupts).toEqual([0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 4]);
    expect(byName['dma-coherent']).toEqual([]);
  });

  test('bad inputs are refused', () => {
    expect(() => virtioMmioDts({ baseAddress: -1, spi: 16 })).toThrow(RangeError);
    expect(() => virtioMmioDts({ baseAddress: 0, spi: 5000 })).toThrow(RangeError);
  });
});

describe('kernel command line', () => {
  test('defaults to the first partition of vda, read-write, waiting for the disk', () => {
    expect(kernelCommandLine()).toBe('root=/dev/vda1 rootwait rw');
  });

  test('whole disk, another disk, file system type, read-only and extras', () => {
    expect(kernelCommandLine({ root: 0, diskIndex: 1, fsType: 'ext4', readOnly: true, extra: ['console=ttyAMA0'] })).toBe(
      'root=/dev/vdb rootfstype=ext4 rootwait ro console=ttyAMA0',
    );
  });

  test('PARTUUID roots', () => {
    expect(kernelCommandLine({ root: { partuuid: '1234abcd-02' } })).toBe('root=PARTUUID=1234abcd-02 rootwait rw');
    expect(() => kernelCommandLine({ root: { partuuid: 'x y' } })).toThrow(RangeError);
  });

  test('virtio_mmio.device= for guests without a device tree', () => {
    expect(virtioMmioCmdlineDevice(0x0a00_0000, 48)).toBe('virtio_mmio.device=512@0xa000000:48');
  });
});
