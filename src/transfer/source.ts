// Where an image comes from, turned into one shape: a byte stream and the
// size it declares. A File or Blob knows its size; a URL is fetched and its
// body streamed (the size is Content-Length, or the caller's); a
// ReadableStream must come with its size, since a disk is made at that size
// before the first byte arrives and a stream can only be read once.
//
// Nothing here buffers beyond one slice: a stream is handed on as it is, a
// File or Blob is read 1 MiB slice by slice on demand (see blobSlices), so
// memory stays with whoever reads it (src/transfer/blocks.ts reads it into
// fixed buffers).
// A fetch that fails, or answers other than 200, is a typed StorageError
// with the fetch error (or the status) in it.

import { StorageError, StorageErrorCode } from '../backends/backend.ts';

/** What an image can be imported from. A string is a URL (absolute, or relative to the page). */
export type ImageSource = Blob | URL | string | ReadableStream<Uint8Array>;

export interface OpenedSource {
  stream: ReadableStream<Uint8Array>;
  /** The bytes the source says it holds. */
  size: number;
  /** For messages: the file's name, the URL, or 'stream'. */
  label: string;
}

/**
 * Open `source`. `size` is required for a ReadableStream, and for a URL whose
 * answer carries no Content-Length; when given for a File or URL it must
 * agree with what the source says.
 */
export async function openSource(source: ImageSource, size: number | undefined, signal?: AbortSignal): Promise<OpenedSource> {
  if (size !== undefined && !(Number.isSafeInteger(size) && size >= 0)) {
    throw new RangeError(`image size ${size} is not a whole number of bytes`);
  }
  if (source instanceof Blob) {
    const label = source instanceof File ? source.name : 'blob';
    if (size !== undefined && size !== source.size) {
      throw new StorageError(StorageErrorCode.Truncated, `${label} holds ${source.size} bytes, not the ${size} declared`);
    }
    return { stream: blobSlices(source), size: source.size, label };
  }
  if (typeof source === 'string' || source instanceof URL) return openUrl(String(source), size, signal);
  if (size === undefined) throw new RangeError('a ReadableStream source needs its size in bytes (options.size)');
  return { stream: source, size, label: 'stream' };
}

/** Bytes per slice read from a File or Blob. */
const BLOB_SLICE_BYTES = 1 << 20;

/**
 * A File or Blob read slice by slice (`slice().arrayBuffer()`), not through
 * `Blob.stream()`: in Chromium 150 an import reading a Blob's own stream with
 * a BYOB reader stalled for good now and then, about 1 run in 40 of
 * e2e/transfer.spec.ts (the stream's read never settled; the storage side was
 * idle). A slice read settles or fails on its own, and a File's slices read
 * only the bytes asked for. Pulled on demand, one slice ahead at most.
 */
function blobSlices(blob: Blob): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (at >= blob.size) return controller.close();
        const end = Math.min(blob.size, at + BLOB_SLICE_BYTES);
        const bytes = new Uint8Array(await blob.slice(at, end).arrayBuffer());
        if (bytes.length !== end - at) throw new StorageError(StorageErrorCode.Truncated, `the file gave ${bytes.length} bytes for ${end - at} asked at ${at}`);
        at = end;
        controller.enqueue(bytes);
      },
    },
    { highWaterMark: 0 },
  );
}

async function openUrl(url: string, size: number | undefined, signal?: AbortSignal): Promise<OpenedSource> {
  let response: Response;
  try {
    response = await fetch(url, { signal });
  } catch (err) {
    if (signal?.aborted) throw abortError(signal, `fetch of ${url}`);
    throw new StorageError(StorageErrorCode.Io, `fetch of ${url} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel().catch(() => undefined);
    const code = response.status === 404 ? StorageErrorCode.NotFound : StorageErrorCode.Io;
    throw new StorageError(code, `fetch of ${url} answered ${response.status} ${response.statusText}`.trim(), { cause: response });
  }
  // A compressed body's Content-Length is not the image's: trust only a plain one.
  // A web page is never a disk image: a server's fallback page (a single-page
  // app answers 200 with index.html for any path) must not replace a disk.
  const type = response.headers.get('Content-Type')?.split(';')[0]?.trim().toLowerCase();
  if (type === 'text/html' || type === 'application/xhtml+xml') {
    await response.body.cancel().catch(() => undefined);
    throw new StorageError(StorageErrorCode.Io, `fetch of ${url} answered a web page (${type}), not a disk image`);
  }
  const header = response.headers.get('Content-Length');
  const declared = header !== null && /^\d+$/.test(header) && !response.headers.get('Content-Encoding') ? Number(header) : undefined;
  if (declared !== undefined && size !== undefined && declared !== size) {
    await response.body.cancel().catch(() => undefined);
    throw new StorageError(StorageErrorCode.Truncated, `${url} is ${declared} bytes (Content-Length), not the ${size} declared`);
  }
  const known = size ?? declared;
  if (known === undefined) {
    await response.body.cancel().catch(() => undefined);
    throw new RangeError(`${url} sent no Content-Length: give the image's size (options.size)`);
  }
  return { stream: response.body, size: known, label: url };
}

/** The typed error for a cancelled transfer, with the signal's reason as cause. */
export function abortError(signal: AbortSignal, what: string): StorageError {
  return new StorageError(StorageErrorCode.Aborted, `${what} was cancelled`, { cause: signal.reason });
}

/** Throw the typed abort error when `signal` has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}
