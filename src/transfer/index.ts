// Streaming import and export of disk images (docs/transfer.md).

export { BlockReader } from './blocks.ts';
export { OPFS_EXPORT_FOLDER, clearExportFiles, exportStream, exportToFile, offerDownload, saveToHandle } from './export.ts';
export {
  OPFS_IMPORT_FOLDER,
  diskBytesFor,
  importImage,
  importIntoBackend,
  type ImportImageOptions,
  type ImportOptions,
  type ImportResult,
  type ImportTarget,
} from './import.ts';
export { DEFAULT_BLOCK_BYTES, type TransferOptions, type TransferProgress } from './progress.ts';
export { openSource, type ImageSource, type OpenedSource } from './source.ts';
export { isAllZero, splitRuns, type Run } from './zero.ts';
