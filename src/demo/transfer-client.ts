// The page side of the lab's transfer worker: one transfer at a time, with
// progress through a callback and cancel through `cancel()`. Errors come back
// as Errors carrying the worker's StorageError code.

import { fromWireError, type BackendSpec } from '../host/browser/worker-protocol.ts';
import type { ImportImageOptions, ImportResult, ImportTarget } from '../transfer/import.ts';
import type { TransferProgress } from '../transfer/progress.ts';
import type { TransferReply, TransferRequest } from './transfer-protocol.ts';

export class TransferClient {
  readonly #worker = new Worker(new URL('./transfer-worker.ts', import.meta.url), { type: 'module', name: 'transfer' });
  #busy = false;

  get busy(): boolean {
    return this.#busy;
  }

  importImage(
    source: File | string,
    target: ImportTarget,
    existing: ImportImageOptions['existing'],
    onProgress: (p: TransferProgress) => void,
  ): Promise<ImportResult> {
    return this.#run({ type: 'import', source, target, existing }, onProgress, (r) => (r.type === 'imported' ? r.result : undefined));
  }

  exportImage(spec: BackendSpec, fileName: string, onProgress: (p: TransferProgress) => void): Promise<File> {
    return this.#run({ type: 'export', spec, fileName }, onProgress, (r) => (r.type === 'exported' ? r.file : undefined));
  }

  cancel(): void {
    this.#worker.postMessage({ type: 'cancel' } satisfies TransferRequest);
  }

  #run<T>(request: TransferRequest, onProgress: (p: TransferProgress) => void, result: (r: TransferReply) => T | undefined): Promise<T> {
    if (this.#busy) return Promise.reject(new Error('a transfer is already running'));
    this.#busy = true;
    return new Promise<T>((resolve, reject) => {
      this.#worker.onmessage = (event: MessageEvent<TransferReply>) => {
        const reply = event.data;
        if (reply.type === 'progress') return onProgress(reply.progress);
        this.#busy = false;
        if (reply.type === 'error') return reject(fromWireError(reply.error));
        const value = result(reply);
        if (value === undefined) reject(new Error(`unexpected reply ${reply.type}`));
        else resolve(value);
      };
      this.#worker.onerror = (e) => {
        this.#busy = false;
        reject(new Error(`the transfer worker failed: ${e.message}`));
      };
      this.#worker.postMessage(request);
    });
  }
}
