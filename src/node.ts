// Node-only public API ('virtio-blk-web/node'): the vhost-user host that lets
// native QEMU use this project's device, and the positioned-I/O file backend.
export { NodeFileBackend, type NodeFileBackendOptions } from './backends/node-file.ts';
export { VhostUserHost, type VhostUserHostOptions } from './host/vhost-user/host.ts';
