// Messages between the lab page and its transfer worker (transfer-worker.ts).

import type { BackendSpec, WireError } from '../host/browser/worker-protocol.ts';
import type { ImportImageOptions, ImportResult, ImportTarget } from '../transfer/import.ts';
import type { TransferProgress } from '../transfer/progress.ts';

export type TransferRequest =
  | { type: 'import'; source: File | string; target: ImportTarget; existing: ImportImageOptions['existing'] }
  | { type: 'export'; spec: BackendSpec; fileName: string }
  | { type: 'cancel' };

export type TransferReply =
  | { type: 'progress'; progress: TransferProgress }
  | { type: 'imported'; result: ImportResult }
  | { type: 'exported'; file: File }
  | { type: 'error'; error: WireError };
