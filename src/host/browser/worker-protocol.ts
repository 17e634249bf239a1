// The whole boundary between the page (or emulator thread) and the device
// worker, in one place.
//
// Only rare control traffic crosses as messages: start, resize, flush, close,
// and events from the worker. The hot path never does: register accesses,
// doorbells and interrupts go through the register file's shared Int32Array
// with Atomics, and statistics through a shared Float64Array the worker
// rewrites after each batch, so the page reads them without asking.
//
// Requests carry ids and get exactly one reply. Errors cross as plain
// {name, message, code, stack} records, because structured cloning drops an
// Error subclass's own fields (StorageError's `code`).
//
// The worker blocks in Atomics.wait on the doorbell and so cannot see a
// message until it yields. The sender therefore also bumps the control word
// and the doorbell after posting; the worker, woken, sees the control word
// ahead of what it handled and yields to its event loop to take the message.

import { StorageError, type StorageErrorCode } from '../../backends/backend.ts';
import type { HttpChunkedOptions } from '../../backends/http-chunked.ts';
import type { IndexedDbBackendOptions } from '../../backends/indexeddb.ts';
import type { HttpRangeOptions } from '../../backends/http-range.ts';
import type { CacheMode } from '../../block/device.ts';
import type { RateLimiterConfig } from '../../limiter/index.ts';
import type { GuestRegionSpec } from '../../virtio/memory.ts';
import type { MmioState } from '../../virtio/mmio/mmio.ts';

/** Which storage the device serves, described so that it can cross to the worker. */
export type BackendSpec =
  | {
      kind: 'memory';
      /** Disk size in bytes. */
      size: number;
      /** Initial contents (copied). */
      data?: Uint8Array;
      readOnly?: boolean;
    }
  | {
      kind: 'opfs';
      /** File name of the disk in the origin private file system. */
      name: string;
      /** Folder inside OPFS ('/'-separated). */
      directory?: string;
      /** Create the disk at this size when it does not exist. */
      size?: number;
      readOnly?: boolean;
      /** Keep trying this long (ms) while another holder has the disk; default 0 (OpfsBackendOptions.lockWaitMs). */
      lockWaitMs?: number;
    }
  /** A disk of chunks in IndexedDB (src/backends/indexeddb.ts): its options, as plain data. */
  | ({ kind: 'indexeddb' } & IndexedDbBackendOptions)
  | {
      /** A read-only image on any HTTP server that honours Range (src/backends/http-range.ts). */
      kind: 'http-range';
      /** HTTP images are always read-only (accepted for symmetry with the other kinds). */
      readOnly?: true;
      /** The image's URL (absolute, or relative to the page). */
      url: string;
      options?: HttpRangeOptions;
    }
  | {
      /** A read-only image packed by `virtio-blk-web pack`, on any static host (src/backends/http-chunked.ts). */
      kind: 'http-chunked';
      /** HTTP images are always read-only (accepted for symmetry with the other kinds). */
      readOnly?: true;
      /** The URL of its manifest.json. */
      url: string;
      options?: HttpChunkedOptions;
    }
  | {
      /**
       * A copy-on-write overlay (src/backends/overlay.ts): `top` holds every
       * block the guest changed over the read-only `base`, tied to the base's
       * identity. `top` is a memory, OPFS or IndexedDB kind; a new one is
       * created at the size the overlay needs (its `size` is ignored).
       */
      kind: 'overlay';
      base: BackendSpec;
      top: BackendSpec;
      /** Block size of a new top (a power of two, 4 KiB to 16 MiB; default 64 KiB). */
      blockSize?: number;
      /**
       * The base's content identity. Default: the base's own (an HTTP
       * image's ETag or Last-Modified, a chunked image's manifest hash), else
       * its name for OPFS and IndexedDB ('opfs:DIR/NAME', 'indexeddb:NAME':
       * give one that changes when such a base is rewritten), else a SHA-256
       * of a memory base's data.
       */
      baseIdentity?: string;
      readOnly?: boolean;
    }
  | {
      /**
       * A backend of your own: the device worker imports the ES module at
       * `url` (absolute, or relative to the page) and awaits its exported
       * `openBackend(options)`, which returns a BlockBackend.
       */
      kind: 'module';
      url: string;
      options?: unknown;
    };

/** Device options that can cross to the worker (no callbacks, no limiter object). */
export interface DeviceSpec {
  /** Offer VIRTIO_BLK_F_RO. Default: the backend's own. */
  readOnly?: boolean;
  cacheMode?: CacheMode;
  /** GET_ID answer, up to 20 ASCII bytes. */
  serial?: string;
  /** QueueNumMax, a power of two. */
  queueSize?: number;
  /** Throttle the guest: token buckets for bytes and requests (src/limiter). */
  rateLimit?: RateLimiterConfig;
  /**
   * Share a budget with other disks, on any thread: the `buffer` of a
   * `RateLimitGroup`. With `rateLimit` too, a request must fit both.
   */
  rateLimitGroup?: SharedArrayBuffer;
}

/** Page → worker. */
export type HostRequest =
  | {
      type: 'start';
      id: number;
      /** Guest RAM: regions over a shared WebAssembly.Memory or SharedArrayBuffer. */
      memory: GuestRegionSpec[];
      /** The register file's shared state. */
      state: MmioState;
      /** Control word: see `ControlWord`. */
      control: Int32Array;
      /** Statistics: slot i holds DISK_STAT_NAMES[i] (stats.ts). */
      stats: Float64Array;
      backend: BackendSpec;
      device: DeviceSpec;
      /** Microseconds the worker polls the doorbell before it sleeps (0: sleep at once). */
      spinMicros: number;
    }
  | { type: 'resize'; id: number; sizeBytes: number }
  | { type: 'flush'; id: number }
  /** Replace the rate limit (null: unlimited). */
  | { type: 'set-rate-limit'; id: number; config: RateLimiterConfig | null }
  | { type: 'close'; id: number };

/** Worker → page. */
export type HostMessage =
  | { type: 'reply'; id: number; ok: true; value?: unknown }
  | { type: 'reply'; id: number; ok: false; error: WireError }
  /** A request failed in storage; the guest got IOERR and the device keeps serving. */
  | { type: 'storage-error'; error: WireError }
  /** The device set DEVICE_NEEDS_RESET. */
  | { type: 'needs-reset'; reason: string };

export interface WireError {
  name: string;
  message: string;
  /** StorageError's code. */
  code?: StorageErrorCode;
  stack?: string;
}

/** Words of the control Int32Array. */
export const ControlWord = {
  /** Messages the page has posted (bumped after each postMessage). */
  Posted: 0,
  /** Length of the control array. */
  Length: 2,
} as const;

export function toWireError(err: unknown): WireError {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return {
      name: err.name,
      message: err.message,
      stack: err.stack,
      ...(typeof code === 'string' ? { code: code as StorageErrorCode } : {}),
    };
  }
  return { name: 'Error', message: String(err) };
}

/** Rebuild an error on this side: a StorageError keeps its code. */
export function fromWireError(wire: WireError): Error {
  const err = wire.code ? new StorageError(wire.code, wire.message) : Object.assign(new Error(wire.message), { name: wire.name });
  if (wire.stack) err.stack = `${err.stack ?? ''}\n--- in the device worker ---\n${wire.stack}`;
  return err;
}
