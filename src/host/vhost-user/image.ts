// A disk image for the vhost-user host, opened the way the CLI opens it: a
// NodeFileBackend whose DISCARD and WRITE_ZEROES go to fallocate(2) through
// the addon, so that a guest's `fstrim` punches holes in a sparse image
// instead of writing zeroes into it (which would allocate every trimmed
// block). The backend itself stays free of the addon: it takes fallocate as
// an option, and without one it writes zeroes.
//
// A hosted image (`openHostedImage`) is one of the browser's HTTP backends,
// which need only fetch and WebCrypto (Node 20 has both): a manifest URL
// (…/manifest.json, from `virtio-blk-web pack`) opens the chunked form,
// any other URL the Range form. Both are read-only.

import { HttpChunkedBackend } from '../../backends/http-chunked.ts';
import type { HttpImageBackend } from '../../backends/http-image.ts';
import { HttpRangeBackend } from '../../backends/http-range.ts';
import { NodeFileBackend, type NodeFileBackendOptions } from '../../backends/node-file.ts';
import { loadAddon, type VhostUserAddon } from './addon.ts';

export interface DiskImageOptions extends Omit<NodeFileBackendOptions, 'fallocate'> {
  /** The native helper (default: built and loaded on demand, as `VhostUserHost.listen` does). */
  addon?: VhostUserAddon;
}

/**
 * Open an existing raw image with hole punching (Linux: loads the addon,
 * building it on first use; throws `AddonUnavailableError` where it cannot).
 */
export function openDiskImage(path: string, options: DiskImageOptions = {}): NodeFileBackend {
  const addon = options.addon ?? loadAddon();
  return NodeFileBackend.open(path, { readOnly: options.readOnly, fallocate: addon.fallocate });
}

/** Whether `url` names a chunked image's manifest (its path ends in .json) rather than a Range image. */
export function isManifestUrl(url: string): boolean {
  return new URL(url).pathname.endsWith('.json');
}

/** Open a hosted, read-only image: chunked when `url` is a manifest, else Range. */
export async function openHostedImage(url: string): Promise<HttpImageBackend> {
  return isManifestUrl(url) ? HttpChunkedBackend.open(url) : HttpRangeBackend.open(url);
}
