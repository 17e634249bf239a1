// What a consumer's page does with the installed package: a worker-hosted
// OPFS disk over a shared WebAssembly.Memory, its registers read from this
// thread, and a driver's write and read served by the device worker.
// Both pages run it: index.html through Vite's build, plain.html as a plain
// <script type=module> with an import map onto node_modules. The outcome goes
// to <body data-result> as JSON for the test to read.
import { DiskHost, MmioReg, VirtioBlkDriver, GuestMemory, arenaBytes, createDisk } from 'virtio-blk-web';

const RAM_BASE = 0x4000_0000;
const PAGES = 64; // 4 MiB of guest RAM

async function run() {
  const result = { crossOriginIsolated: self.crossOriginIsolated };
  const ram = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true });
  const regions = [{ guestAddress: RAM_BASE, source: ram }];
  const disk = await createDisk({
    memory: regions,
    host: DiskHost.Worker,
    backend: { kind: 'opfs', name: `consumer-${Date.now()}.img`, size: 1 << 20 },
    device: { serial: 'consumer-test' },
  });
  result.host = disk.host;
  result.magic = disk.mmio.read(MmioReg.MagicValue, 4);
  result.version = disk.mmio.read(MmioReg.Version, 4);
  result.deviceId = disk.mmio.read(MmioReg.DeviceId, 4);
  const arena = arenaBytes(256);
  const driver = await VirtioBlkDriver.init({
    mmio: disk.mmio,
    memory: new GuestMemory(regions),
    arena: { addr: RAM_BASE, len: arena + (1 << 20) },
    waitForInterrupt: () => disk.waitForInterrupt(),
  });
  result.capacitySectors = driver.capacitySectors;
  const data = new Uint8Array(8192).map((_, i) => (i * 7 + 3) & 0xff);
  await driver.write(8, data);
  await driver.flush();
  const back = await driver.read(8, data.length);
  result.roundTrip = back.length === data.length && back.every((b, i) => b === data[i]);
  result.stats = { reads: disk.stats.reads, writes: disk.stats.writes, ioErrors: disk.stats.ioErrors };
  await disk.close();
  return result;
}

run().then(
  (result) => (document.body.dataset.result = JSON.stringify(result)),
  (err) => (document.body.dataset.result = JSON.stringify({ error: `${err?.name}: ${err?.message}` })),
);
