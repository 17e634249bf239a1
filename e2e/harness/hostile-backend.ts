// The hostile suite's backend for the device worker (BackendSpec {kind:
// 'module'}): a memory disk over the page's SharedArrayBuffer, so the page
// sees every byte the device writes, with an optional gate holding chosen
// operations (test/hostile/shared-disk.ts).
export { openBackend } from '../../test/hostile/shared-disk.ts';
