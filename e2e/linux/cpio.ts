// A minimal cpio "newc" writer: enough for a Linux initramfs (regular files,
// directories, symlinks, owned by root). Linux unpacks concatenated archives
// in order, so a per-boot archive holding only the guest test script can be
// appended to the cached base initramfs without rebuilding it.

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'symlink'; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

/** Encode `entries` (parents before children) as one newc archive with its trailer. */
export function cpioNewc(entries: CpioEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  const encoder = new TextEncoder();
  let length = 0;
  let inode = 1;
  const push = (bytes: Uint8Array): void => {
    chunks.push(bytes);
    length += bytes.length;
    const pad = (4 - (length % 4)) % 4;
    if (pad) {
      chunks.push(new Uint8Array(pad));
      length += pad;
    }
  };
  const add = (name: string, mode: number, data: Uint8Array, nlink: number): void => {
    const fields = [inode++, mode, 0, 0, nlink, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    const header = '070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('');
    // Header and name are padded together to a multiple of 4, then the data.
    push(encoder.encode(`${header}${name}\0`));
    if (data.length) push(data);
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (e.kind === 'dir') add(name, S_IFDIR | (e.mode ?? 0o755), new Uint8Array(0), 2);
    else if (e.kind === 'file') add(name, S_IFREG | (e.mode ?? 0o644), e.data, 1);
    else add(name, S_IFLNK | 0o777, encoder.encode(e.target), 1);
  }
  add('TRAILER!!!', 0, new Uint8Array(0), 1);
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
