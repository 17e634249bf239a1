// virtio-blk numbers (virtio 1.2 §5.2): feature bits, request types, status
// bytes and the configuration-space layout. Shared by the device and the
// guest-side driver.

import { VirtioFeature } from '../virtio/device.ts';

/** Device type of a block device (§5). */
export const VIRTIO_ID_BLOCK = 2;

/** Logical sector size the protocol counts in, whatever blk_size says (§5.2.6). */
export const SECTOR_SIZE = 512;

/** Block feature bits (§5.2.3). */
export const BlkFeature = {
  SizeMax: 1n,
  SegMax: 2n,
  Geometry: 4n,
  Ro: 5n,
  BlkSize: 6n,
  Flush: 9n,
  Topology: 10n,
  ConfigWce: 11n,
  Mq: 12n,
  Discard: 13n,
  WriteZeroes: 14n,
  Lifetime: 15n,
  SecureErase: 16n,
} as const;

/** Request types (§5.2.6). */
export const BlkRequestType = {
  In: 0,
  Out: 1,
  Flush: 4,
  GetId: 8,
  GetLifetime: 10,
  Discard: 11,
  WriteZeroes: 13,
  SecureErase: 14,
} as const;

/** Status byte values (§5.2.6). */
export const BlkStatus = {
  Ok: 0,
  IoErr: 1,
  Unsupp: 2,
} as const;
export type BlkStatus = (typeof BlkStatus)[keyof typeof BlkStatus];

/** virtio_blk_discard_write_zeroes.flags (§5.2.6). */
export const WRITE_ZEROES_FLAG_UNMAP = 1;

/** Length of GET_ID's answer: a serial of up to 20 bytes, zero-padded (§5.2.6). */
export const BLK_ID_BYTES = 20;

/** Length of the request header: type, reserved (Linux: ioprio), sector (§5.2.6). */
export const BLK_HEADER_BYTES = 16;

/** Length of one discard / write-zeroes segment (§5.2.6). */
export const BLK_DWZ_SEGMENT_BYTES = 16;

/** Offsets into struct virtio_blk_config (§5.2.4). */
export const BlkConfig = {
  Capacity: 0, // le64, in 512-byte sectors
  SizeMax: 8, // le32
  SegMax: 12, // le32
  GeometryCylinders: 16, // le16
  GeometryHeads: 18, // u8
  GeometrySectors: 19, // u8
  BlkSize: 20, // le32
  PhysicalBlockExp: 24, // u8
  AlignmentOffset: 25, // u8
  MinIoSize: 26, // le16
  OptIoSize: 28, // le32
  Writeback: 32, // u8
  NumQueues: 34, // le16
  MaxDiscardSectors: 36, // le32
  MaxDiscardSeg: 40, // le32
  DiscardSectorAlignment: 44, // le32
  MaxWriteZeroesSectors: 48, // le32
  MaxWriteZeroesSeg: 52, // le32
  WriteZeroesMayUnmap: 56, // u8
  /** Length through unused1[3]: secure-erase fields follow only with that feature. */
  Size: 60,
} as const;

/**
 * Every feature this project implements, device and driver side alike. The
 * device offers all of them except RO, DISCARD and WRITE_ZEROES, which it
 * offers only when they apply; the driver accepts any of them.
 */
export const BLK_SUPPORTED_FEATURES =
  (1n << VirtioFeature.Version1) |
  (1n << VirtioFeature.RingEventIdx) |
  (1n << VirtioFeature.RingIndirectDesc) |
  (1n << BlkFeature.SizeMax) |
  (1n << BlkFeature.SegMax) |
  (1n << BlkFeature.BlkSize) |
  (1n << BlkFeature.Topology) |
  (1n << BlkFeature.Ro) |
  (1n << BlkFeature.Flush) |
  (1n << BlkFeature.ConfigWce) |
  (1n << BlkFeature.Discard) |
  (1n << BlkFeature.WriteZeroes);

/** The features of BLK_SUPPORTED_FEATURES a device offers only when they apply. */
export const BLK_CONDITIONAL_FEATURES = (1n << BlkFeature.Ro) | (1n << BlkFeature.Discard) | (1n << BlkFeature.WriteZeroes);
