// Assertions the HTTP backend tests share.

import { expect } from 'vitest';
import type { BlockBackend } from '../../src/backends/backend.ts';
import { HttpError } from '../../src/backends/http-fetch.ts';

/** Byte equality that says where it breaks (toEqual on big arrays is slow and prints them whole). */
export function same(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  const i = actual.findIndex((x, k) => x !== expected[k]);
  expect(i, 'first differing byte').toBe(-1);
}

/** `length` bytes at `offset`, read into a fresh (poisoned) buffer. */
export async function read(b: BlockBackend, offset: number, length: number): Promise<Uint8Array> {
  const dst = new Uint8Array(length).fill(0xee);
  await b.read(offset, dst);
  return dst;
}

/** The HttpError `promise` rejects with (fails the test if it resolves or rejects with anything else). */
export async function failure(promise: Promise<unknown>): Promise<HttpError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(HttpError);
  return err as HttpError;
}
