// Node-only public API ('virtio-blk-web/node'): the vhost-user host that lets
// native QEMU use this project's device, and the positioned-I/O file backend.
// `openDiskImage` is the file backend with hole punching (the addon's
// fallocate): what the CLI serves, and what a host built from code should use.
export { NodeFileBackend, type Fallocate, type NodeFileBackendOptions } from './backends/node-file.ts';
export { AddonUnavailableError, loadAddon, type VhostUserAddon } from './host/vhost-user/addon.ts';
export { VhostUserHost, type VhostUserHostOptions } from './host/vhost-user/host.ts';
export { openDiskImage, type DiskImageOptions } from './host/vhost-user/image.ts';
