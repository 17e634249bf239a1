// Ruby 3.4 (npm @ruby/3.4-wasm-wasi, the interpreter without its standard
// library) run under browser_wasi_shim with project disks mounted at
// /disks: the WASI program nobody here wrote, for e2e/wasi.spec.ts.

import { ConsoleStdout, File, OpenFile, PreopenDirectory, WASI } from '@bjorn3/browser_wasi_shim';
import { RubyVM } from '@ruby/wasm-wasi';
import rubyWasmUrl from '@ruby/3.4-wasm-wasi/dist/ruby.wasm?url';
import type { BlockBackend, StorageError } from '../../src/backends/backend.ts';
import { directDiskIo } from '../../src/wasi/direct-io.ts';
import { mountDisk } from '../../src/wasi/mount.ts';

let module: Promise<WebAssembly.Module> | undefined;

export interface RubyRun {
  /** Lines the program printed on stdout and stderr. */
  stdout: string[];
  stderr: string[];
  /** Storage errors the adapter reported to the host. */
  storageErrors: Array<{ code: string; message: string }>;
}

/** Run `script` with each backend mounted at /disks/NAME.img. */
export async function runRuby(script: string, disks: Record<string, BlockBackend>, options: { directIo?: boolean } = {}): Promise<RubyRun> {
  module ??= fetch(rubyWasmUrl).then(async (r) => WebAssembly.compile(await r.arrayBuffer()));
  const run: RubyRun = { stdout: [], stderr: [], storageErrors: [] };
  const root = new PreopenDirectory('/', new Map());
  const onStorageError = (e: StorageError): void => void run.storageErrors.push({ code: e.code, message: e.message });
  for (const [name, backend] of Object.entries(disks)) mountDisk(root, `disks/${name}.img`, backend, { onStorageError, name });
  const fds = [
    new OpenFile(new File([])),
    ConsoleStdout.lineBuffered((line) => run.stdout.push(line)),
    ConsoleStdout.lineBuffered((line) => run.stderr.push(line)),
    root,
  ];
  const wasi = new WASI([], [], fds);
  if (options.directIo) directDiskIo(wasi);
  const { vm } = await RubyVM.instantiateModule({ module: await module, wasip1: wasi, args: ['ruby.wasm', '--disable-gems', '-EUTF-8', '-e_=0'] });
  try {
    vm.eval(script);
  } catch (err) {
    run.stderr.push(String(err));
  }
  return run;
}
