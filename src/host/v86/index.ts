// The v86 adapter's public surface (re-exported from src/index.ts).
export {
  attachVirtioBlk,
  V86AttachError,
  V86_DEFAULT_BAR_ADDRESS,
  V86_DEFAULT_SLOT,
  V86_MMAP_UNIT,
  type AttachVirtioBlkOptions,
  type V86DiskOptions,
  type V86VirtioBlk,
} from './attach.ts';
export { formatDiagnosis, type RingState, type V86CpuState, type V86DiskDiagnosis } from './diagnosis.ts';
export { V86HookError, v86Internals, type V86Cpu, type V86Io, type V86Like, type V86Pci, type V86PciDevice } from './hooks.ts';
