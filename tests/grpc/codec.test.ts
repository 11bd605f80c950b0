/**
 * Our protobuf codec (src/grpc/wire.ts) against protobufjs reading the .proto files, the two .proto
 * files against each other, and the envelope parser against ocicrypt's pinned envelopes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { decodeMessage, encodeMessage, type Schema } from '../../src/grpc/wire';
import { base64Bytes, decodeStdBase64, parseAnnotationPacket, parseUnwrapInput, parseWrapInput, unwrapOutput } from '../../src/grpc/envelope';
import { InvalidInputError } from '../../src/common/errors';
import { PROTO_DIR } from '../../src/grpc/server';
import { decodeResponse, encodeRequest, ocicryptUnwrapInput, ocicryptWrapInput } from '../helpers/grpc';

const FIX = path.join(__dirname, 'fixtures');
const WRAP_IN: Schema = { 1: ['key_provider_key_wrap_protocol_input', 'bytes'] };
const HELLO_IN: Schema = { 1: ['name', 'string'] };
const ATTEST_OUT: Schema = { 1: ['endorsed_tcb', 'string'], 2: ['certs', 'string'], 3: ['attestation_report', 'string'], 4: ['uvm_reference_info', 'string'] };

describe('the .proto files', () => {
  it('keyprovider.proto and key_provider.proto differ only in their comments and package line', () => {
    const body = (f: string) =>
      fs
        .readFileSync(path.join(PROTO_DIR, f), 'utf8')
        .split('\n')
        .filter((l) => !l.startsWith('//') && !l.startsWith('package '));
    expect(body('key_provider.proto')).toEqual(body('keyprovider.proto'));
    expect(fs.readFileSync(path.join(PROTO_DIR, 'keyprovider.proto'), 'utf8')).toMatch(/^package keyprovider;$/m);
    expect(fs.readFileSync(path.join(PROTO_DIR, 'key_provider.proto'), 'utf8')).toMatch(/^package key_provider;$/m);
  });
});

describe('wire codec vs protobufjs', () => {
  it('decodes what protobufjs encodes, and protobufjs decodes what it encodes (bytes and strings)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.string({ maxLength: 300 }), (bytes, name) => {
        const input = Buffer.from(bytes);
        const theirs = encodeRequest('keyprovider', 'UnWrapKey', { key_provider_key_wrap_protocol_input: input });
        const ours = encodeMessage({ key_provider_key_wrap_protocol_input: input }, WRAP_IN);
        // protobufjs writes a field it was given even when empty; proto3 leaves it out (both read back the same).
        if (input.length) expect(ours).toEqual(theirs);
        else expect(decodeMessage(ours, WRAP_IN)).toEqual(decodeMessage(theirs, WRAP_IN));
        const d = decodeMessage(theirs, WRAP_IN);
        expect(d.ok && d.fields.key_provider_key_wrap_protocol_input).toEqual(input);
        const h = decodeMessage(encodeRequest('key_provider', 'SayHello', { name }), HELLO_IN);
        expect(h.ok && h.fields.name).toBe(name);
      }),
      { numRuns: 200 },
    );
  });

  it('encodes a multi-field answer protobufjs reads back', () => {
    const v = { endorsed_tcb: '0300000000000873', certs: 'Y2VydHM=', attestation_report: 'cmVwb3J0', uvm_reference_info: '' };
    expect(decodeResponse('keyprovider', 'GetAttestationData', encodeMessage(v, ATTEST_OUT))).toEqual(v);
  });

  it('skips unknown fields of every wire type; the last occurrence of a field wins', () => {
    const unknown = Buffer.from([0x10, 0x96, 0x01, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3, 4, 0x2a, 0x02, 0x61, 0x62]);
    const msg = Buffer.concat([Buffer.from([0x0a, 0x01, 0x41]), unknown, Buffer.from([0x0a, 0x01, 0x42])]);
    expect(decodeMessage(msg, HELLO_IN)).toEqual({ ok: true, fields: { name: 'B' } });
  });

  it.each<[string, number[]]>([
    ['a length past the end', [0x0a, 0x05, 0x41]],
    ['a varint that never ends', [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]],
    ['field 1 as a varint', [0x08, 0x01]],
    ['a group (not proto3)', [0x0b]],
    ['wire type 7', [0x0f]],
    ['field number 0', [0x02, 0x00]],
    ['a truncated fixed64', [0x11, 1, 2]],
    ['invalid UTF-8 in a string', [0x0a, 0x02, 0xc3, 0x28]],
  ])('refuses %s with an error, never a throw', (_what, bytes) => {
    const d = decodeMessage(Buffer.from(bytes), HELLO_IN);
    expect(d.ok).toBe(false);
    if (!d.ok) expect(d.error.code).toBe('ERR_GRPC_MESSAGE');
  });

  it('never throws on any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const d = decodeMessage(Buffer.from(bytes), ATTEST_OUT);
        expect(typeof d.ok).toBe('boolean');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('ocicrypt envelopes, pinned', () => {
  const unwrapFixture = fs.readFileSync(path.join(FIX, 'ocicrypt-keyunwrap-input.json'));
  const wrapFixture = fs.readFileSync(path.join(FIX, 'ocicrypt-keywrap-input.json'));
  const packetFixture = fs.readFileSync(path.join(FIX, 'annotation-packet.json'));

  it('the test client builds exactly the bytes ocicrypt marshals', () => {
    expect(ocicryptUnwrapInput(packetFixture)).toEqual(unwrapFixture);
    expect(ocicryptWrapInput('skr:/keys/fixture-key', '{"symkey":"AAAA","cipher":"AES_256_CTR_HMAC_SHA256"}')).toEqual(wrapFixture);
  });

  it('UnwrapKey input → the annotation packet → kid, endpoints, wrapped bytes', () => {
    const packet = parseUnwrapInput(unwrapFixture);
    expect(packet).toEqual(packetFixture);
    expect(parseAnnotationPacket(packet)).toEqual({
      kid: 'fixture-key',
      wrappedData: Buffer.from([0, 1, 2, 3]),
      kmsEndpoint: 'myvault.vault.azure.net',
      attesterEndpoint: 'sharedeus2.eus2.attest.azure.net',
    });
  });

  it('WrapKeys input → key path and options', () => {
    const w = parseWrapInput(wrapFixture);
    expect(w.keyPath).toBe('/keys/fixture-key');
    expect(w.optsData.toString()).toBe('{"symkey":"AAAA","cipher":"AES_256_CTR_HMAC_SHA256"}');
  });

  it('the answer is what ocicrypt unmarshals: optsdata as standard base64', () => {
    const opts = Buffer.from('{"symkey":"AAAA"}');
    expect(JSON.parse(unwrapOutput(opts).toString())).toEqual({ keyunwrapresults: { optsdata: opts.toString('base64') } });
  });

  it('base64Bytes is Node\'s base64, and decodeStdBase64 takes exactly Go\'s StdEncoding', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (b) => {
        const buf = Buffer.from(b);
        expect(base64Bytes(buf).toString()).toBe(buf.toString('base64'));
        expect(decodeStdBase64(buf.toString('base64'))).toEqual(buf);
      }),
    );
    for (const s of ['AAE', 'AA-_', 'AAE=\n', 'AAF=']) expect(decodeStdBase64(s)).toBeUndefined();
  });

  it('any JSON as input or packet ends in InvalidInputError or a result, never another throw', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.jsonValue(), (envelope, packet) => {
        for (const f of [
          () => parseUnwrapInput(Buffer.from(JSON.stringify(envelope))),
          () => parseWrapInput(Buffer.from(JSON.stringify(envelope))),
          () => parseAnnotationPacket(Buffer.from(JSON.stringify(packet))),
          () => parseUnwrapInput(ocicryptUnwrapInput(JSON.stringify(packet))),
        ]) {
          try {
            f();
          } catch (e) {
            expect(e).toBeInstanceOf(InvalidInputError);
            expect((e as Error).message.length).toBeLessThan(600);
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('a deeply nested envelope is refused before JSON.parse', () => {
    expect(() => parseUnwrapInput(Buffer.from('['.repeat(100_000)))).toThrow(/nests deeper than/);
  });
});
