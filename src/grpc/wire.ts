/**
 * The protobuf wire format of the key provider's messages, which are all proto3 messages of
 * scalar `bytes`/`string` fields. Decoding never throws: a malformed message comes back as an
 * error the handler turns into INVALID_ARGUMENT (grpc-js would answer a throwing deserializer with
 * INTERNAL). Unknown fields are skipped, as protobuf requires; a known field with the wrong wire
 * type, a truncated field or invalid UTF-8 in a string is an error; the last occurrence of a field
 * wins.
 */
import { InvalidInputError } from '../common/errors';

export type FieldType = 'bytes' | 'string';
/** Field number → name and type. */
export type Schema = Readonly<Record<number, readonly [string, FieldType]>>;

export type Decoded = { ok: true; fields: Record<string, Buffer | string> } | { ok: false; error: InvalidInputError };

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

function fail(message: string): Decoded {
  return { ok: false, error: new InvalidInputError('ERR_GRPC_MESSAGE', `malformed protobuf message: ${message}`) };
}

/** A varint at `pos` (at most 10 bytes, value within 2^53): [value, next position] or undefined. */
function readVarint(buf: Buffer, pos: number): [number, number] | undefined {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10 && pos < buf.length; i++) {
    const b = buf[pos++];
    value += (b & 0x7f) * scale;
    if (!(b & 0x80)) return value <= Number.MAX_SAFE_INTEGER ? [value, pos] : undefined;
    scale *= 128;
  }
  return undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decode `buf` against `schema`. Fields that are absent get their proto3 default ('' or empty bytes). */
export function decodeMessage(buf: Buffer, schema: Schema): Decoded {
  const fields: Record<string, Buffer | string> = {};
  for (const [, [name, type]] of Object.entries(schema)) fields[name] = type === 'string' ? '' : Buffer.alloc(0);
  let pos = 0;
  while (pos < buf.length) {
    const tag = readVarint(buf, pos);
    if (!tag) return fail(`bad tag at byte ${pos}`);
    const [key, afterTag] = tag;
    const fieldNo = Math.floor(key / 8);
    const wire = key % 8;
    if (fieldNo < 1 || fieldNo > 536_870_911) return fail(`field number ${fieldNo} at byte ${pos}`);
    pos = afterTag;
    const known = schema[fieldNo];
    if (known && wire !== WIRE_LEN) return fail(`field ${fieldNo} (${known[0]}) has wire type ${wire}, not length-delimited`);
    switch (wire) {
      case WIRE_VARINT: {
        const v = readVarint(buf, pos);
        if (!v) return fail(`bad varint in field ${fieldNo}`);
        pos = v[1];
        break;
      }
      case WIRE_I64:
      case WIRE_I32: {
        pos += wire === WIRE_I64 ? 8 : 4;
        if (pos > buf.length) return fail(`field ${fieldNo} is cut short`);
        break;
      }
      case WIRE_LEN: {
        const len = readVarint(buf, pos);
        if (!len) return fail(`bad length of field ${fieldNo}`);
        const [n, start] = len;
        if (n > buf.length - start) return fail(`field ${fieldNo} claims ${n} bytes, ${buf.length - start} remain`);
        pos = start + n;
        if (known) {
          const body = buf.subarray(start, pos);
          if (known[1] === 'string') {
            try {
              fields[known[0]] = utf8.decode(body);
            } catch {
              return fail(`field ${fieldNo} (${known[0]}) is not valid UTF-8`);
            }
          } else fields[known[0]] = Buffer.from(body);
        }
        break;
      }
      default:
        // Groups (3, 4) are not proto3; 6 and 7 are not wire types.
        return fail(`field ${fieldNo} has unsupported wire type ${wire}`);
    }
  }
  return { ok: true, fields };
}

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** Encode the fields of `schema` present in `values`; proto3 leaves empty values out. */
export function encodeMessage(values: Record<string, Buffer | string | undefined>, schema: Schema): Buffer {
  const parts: Buffer[] = [];
  for (const [no, [name, type]] of Object.entries(schema)) {
    const v = values[name];
    if (v === undefined) continue;
    const body = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
    if (body.length === 0) continue;
    if (type === 'string' && typeof v !== 'string') throw new TypeError(`${name} must be a string`);
    parts.push(varint(Number(no) * 8 + WIRE_LEN), varint(body.length), body);
  }
  return Buffer.concat(parts);
}
