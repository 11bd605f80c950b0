import { AmdOid, certificateExtensions, hwidOf, readVcekExtensions } from '../../src/certs/vcek';
import { der } from '../../src/asn1/der';
import { SimulatedPlatform } from '../../src/snp/simulator';
import { derToPem, pemCertificatesToDer, splitPem } from '../../src/certs/pem';
import { parseThimCertificates } from '../../src/certs/thim';
import { parseReport } from '../../src/snp/report';
import { describeVectors, vector } from '../helpers/vectors';
import { makeVcek, testHierarchy } from './fixtures';
import { certificateFromDer } from '../../src/asn1/certificate';

describeVectors('real VCEK extensions', () => {
  const milanVcekPem = () => parseThimCertificates(vector('real-milan/thim_certs.json').toString('utf8')).vcekCert;

  it('reads the real Milan VCEK: product, SPLs, TCB 0x7308000000000003, hwid = CHIP_ID', () => {
    const e = readVcekExtensions(milanVcekPem());
    expect(e.productName).toBe('Milan-B0');
    expect(e.product).toBe('Milan');
    expect(e.tcb).toEqual({ bootloader: 3, tee: 0, snp: 8, microcode: 0x73 });
    expect(e.tcbRaw).toBe(0x7308000000000003n);
    expect(e.hwid).toEqual(parseReport(vector('real-milan/snp_report.bin')).chipId);
    expect(e.structVersion).toBe(0);
  });

  it('reads DER, PEM bytes and X509Certificate alike (go-sev-guest VCEK)', () => {
    const der = vector('real-go-sev-guest/vcek.testcer');
    const a = readVcekExtensions(der);
    expect(readVcekExtensions(Buffer.from(derToPem(der)))).toEqual(a);
    expect(readVcekExtensions(certificateFromDer(der))).toEqual(a);
    expect(a.tcbRaw).toBe(parseReport(vector('real-go-sev-guest/attestation.bin')).reportedTcb);
    expect(a.tcb).toEqual({ bootloader: 2, tee: 0, snp: 5, microcode: 0x44 });
  });

  it('refuses a PEM holding more than one certificate', () => {
    const two = splitPem(vector('amd-roots/ask_ark_milan.pem').toString('utf8')).join('');
    expect(() => readVcekExtensions(two)).toThrow(expect.objectContaining({ code: 'ERR_VCEK_FORMAT' }));
  });

  it('refuses an ASK (no AMD extensions) with a typed error', () => {
    const ask = pemCertificatesToDer(vector('amd-roots/ask_ark_milan.pem').toString('utf8'))[0];
    expect(() => readVcekExtensions(ask)).toThrow(expect.objectContaining({ code: 'ERR_VCEK_EXTENSION', message: expect.stringContaining(AmdOid.productName) }));
  });
});

describe('synthetic VCEK extensions', () => {
  const h = testHierarchy();

  it('encodes Turin TCB with the FMC SPL (1.3.6.1.4.1.3704.1.3.9) and an 8-byte hwid', () => {
    const v = makeVcek(h, { product: 'Turin', tcb: 0x4800000018040201n, hwid: Buffer.from('0102030405060708', 'hex') });
    const e = readVcekExtensions(v.der);
    expect(e.product).toBe('Turin');
    expect(e.tcb).toEqual({ fmc: 1, bootloader: 2, tee: 4, snp: 0x18, microcode: 0x48 });
    expect(e.tcbRaw).toBe(0x4800000018040201n);
    expect(e.hwid?.toString('hex')).toBe('0102030405060708');
  });

  it('handles a microcode SPL ≥ 0x80 (two-byte INTEGER) on Genoa', () => {
    const v = makeVcek(h, { product: 'Genoa', productName: 'Genoa-B1', tcb: 0xd315000000000a04n });
    const e = readVcekExtensions(v.pem);
    expect(e.product).toBe('Genoa');
    expect(e.tcb.microcode).toBe(0xd3);
    expect(e.tcbRaw).toBe(0xd315000000000a04n);
    expect(e.hwid).toBeUndefined();
  });

  it('names the missing extension', () => {
    const noSnp = makeVcek(h, { tcb: 0x7308000000000003n, omit: [AmdOid.snpSpl] });
    expect(() => readVcekExtensions(noSnp.der)).toThrow(/snpSPL.*1\.3\.6\.1\.4\.1\.3704\.1\.3\.3/);
    const turinNoFmc = makeVcek(h, { product: 'Turin', tcb: 0x4800000018040201n, omit: [AmdOid.fmcSpl] });
    expect(() => readVcekExtensions(turinNoFmc.der)).toThrow(/fmcSPL/);
  });

  it('keeps an unknown product name but leaves product undefined', () => {
    const v = makeVcek(h, { productName: 'Venice-A0', tcb: 0x0100000000000000n });
    const e = readVcekExtensions(v.der);
    expect(e.productName).toBe('Venice-A0');
    expect(e.product).toBeUndefined();
  });
});

describe('hwid extension forms (1.3.6.1.4.1.3704.1.4)', () => {
  const chip = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 7 + 3) & 0xff));

  it('reads the raw chip id and the DER OCTET STRING-wrapped one alike (64 bytes; Turin 8)', () => {
    expect(hwidOf(chip)).toEqual(chip);
    expect(hwidOf(der.octets(chip))).toEqual(chip);
    const turin = chip.subarray(0, 8);
    expect(hwidOf(turin)).toEqual(turin);
    expect(hwidOf(der.octets(turin))).toEqual(turin);
  });

  it('reads both forms from VCEKs the simulator issues, for Milan and Turin', () => {
    for (const product of ['Milan', 'Turin'] as const) {
      const raw = new SimulatedPlatform({ product });
      const wrapped = new SimulatedPlatform({ product, hwidForm: 'octet-string' });
      const want = raw.chipId.subarray(0, product === 'Turin' ? 8 : 64);
      // The wrapped certificate really carries the inner TLV (04 40 … / 04 08 …).
      expect(certificateExtensions(wrapped.vcekDer).get(AmdOid.hwid)?.subarray(0, 2)).toEqual(Buffer.from([0x04, want.length]));
      expect(certificateExtensions(raw.vcekDer).get(AmdOid.hwid)).toEqual(want);
      expect(readVcekExtensions(raw.vcekDer).hwid).toEqual(want);
      expect(readVcekExtensions(wrapped.vcekDer).hwid).toEqual(want);
    }
  });

  it('refuses any other size or shape with ERR_VCEK_EXTENSION', () => {
    for (const bad of [Buffer.alloc(0), Buffer.alloc(5), Buffer.alloc(65), Buffer.alloc(66), der.octets(Buffer.alloc(63)), Buffer.from([0x04, 0x08, 1, 2, 3, 4, 5, 6, 7])]) {
      expect(() => hwidOf(bad)).toThrow(expect.objectContaining({ code: 'ERR_VCEK_EXTENSION', message: expect.stringContaining(AmdOid.hwid) }));
    }
    // 66 bytes that start like a wrapper but are not one (wrong inner length).
    const fake = Buffer.concat([Buffer.from([0x04, 0x41]), Buffer.alloc(64)]);
    expect(() => hwidOf(fake)).toThrow(/hwid/);
  });
});
