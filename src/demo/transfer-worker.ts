// The lab's transfer worker: imports and exports run here, with the
// project's streaming functions (src/transfer), because OPFS disks open only
// in a dedicated worker. One transfer at a time; 'cancel' aborts it. An
// export is written into a storage-backed OPFS file and the File is posted
// back (a Blob crosses by reference, not by copy), so the page can offer it
// as a download without the image in memory.

import { toStorageError } from '../backends/backend.ts';
import { openBackend } from '../host/browser/open-backend.ts';
import { toWireError, type BackendSpec } from '../host/browser/worker-protocol.ts';
import { clearExportFiles, exportToFile } from '../transfer/export.ts';
import { importImage, type ImportImageOptions, type ImportTarget } from '../transfer/import.ts';
import type { TransferProgress } from '../transfer/progress.ts';
import type { TransferReply, TransferRequest } from './transfer-protocol.ts';

const scope = globalThis as unknown as DedicatedWorkerGlobalScope;
let current: AbortController | null = null;

const post = (reply: TransferReply): void => scope.postMessage(reply);
const onProgress = (p: TransferProgress): void => post({ type: 'progress', progress: p });

async function runImport(source: File | string, target: ImportTarget, existing: ImportImageOptions['existing'], signal: AbortSignal): Promise<void> {
  const result = await importImage(source, target, { existing, signal, onProgress });
  post({ type: 'imported', result });
}

async function runExport(spec: BackendSpec, fileName: string, signal: AbortSignal): Promise<void> {
  // Files of earlier exports have been downloaded (or abandoned) by now.
  await clearExportFiles();
  const backend = await openBackend(spec);
  try {
    const file = await exportToFile(backend, fileName, { signal, onProgress });
    post({ type: 'exported', file });
  } finally {
    await backend.close();
  }
}

scope.onmessage = (event: MessageEvent<TransferRequest>) => {
  const request = event.data;
  if (request.type === 'cancel') return void current?.abort(new Error('cancelled in the lab'));
  if (current) return post({ type: 'error', error: toWireError(new Error('a transfer is already running')) });
  const controller = new AbortController();
  current = controller;
  const job =
    request.type === 'import'
      ? runImport(request.source, request.target, request.existing, controller.signal)
      : runExport(request.spec, request.fileName, controller.signal);
  void job
    .catch((err: unknown) => post({ type: 'error', error: toWireError(toStorageError(err, request.type)) }))
    .finally(() => (current = null));
};
