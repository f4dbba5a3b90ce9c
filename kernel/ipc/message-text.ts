/**
 * The JSON text of each message of a SEND / BROADCAST or SEND_BATCH payload as its sender wrote it, so
 * that a call the TypeScript services serve queues the same bytes the fast path's reactor queues for a call
 * it serves (issue 12: messages byte-exact end to end): `{"a" : 1}` stays `{"a" : 1}`, `1.0` stays `1.0`.
 * Located by the addon (`messageSpans`, the reactor's own scan, native/src/fast/ops.cc); without the addon,
 * or for a payload it does not take (a duplicate key), null, and the caller queues JSON.stringify of the
 * parsed value (the same value, in canonical text).
 */
import type { CloveNative } from '../../native/index.js';
import { loadNative, nativeAvailable } from '../sandbox/native.js';

let addon: CloveNative | null | undefined;

/** One text per message (SEND / BROADCAST: one; SEND_BATCH: one per item), undefined where absent. */
export function messageTexts(payload: Buffer, batch: boolean): (string | undefined)[] | null {
  addon ??= nativeAvailable() ? loadNative() : null;
  const spans = addon?.messageSpans(payload, batch);
  if (!spans) return null;
  const texts = new Array<string | undefined>(spans.length / 2);
  for (let i = 0; i < texts.length; i++) {
    const end = spans[2 * i + 1];
    texts[i] = end > 0 ? payload.toString('utf8', spans[2 * i], end) : undefined;
  }
  return texts;
}
