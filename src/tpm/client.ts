/**
 * A typed TPM 2.0 client: one method per command the Azure CVM protocol uses, each marshalling its
 * command exactly (Part 3) and parsing the response as hostile input. Non-zero response codes become
 * TpmError (named, with the handle/parameter/session), malformed responses TpmResponseError, and
 * transport failures TpmTransportError naming the command that was in flight.
 */
import { randomBytes } from 'node:crypto';
import { commandName, HASH_SIZE, TPM_ALG, TPM_CAP, TPM_CC, TPM_HT, TPM_PT, TPM_RH, TPM_RS_PW, TPM_SE, TPM_ST, TPM_SU } from './constants';
import { TpmError, TpmResponseError, TpmTransportError } from './errors';
import { Reader, Writer } from './marshal';
import {
  Attest,
  marshalPublic2b,
  parseAttest,
  PcrSelection,
  readPcrSelections,
  readPublic,
  readSignature,
  RsaPublicArea,
  TpmSignature,
  writePcrSelections,
} from './structures';
import type { TpmTransport } from './transport';

/** One authorization in a command's authorization area. */
export interface AuthSession {
  handle: number;
  nonce?: Buffer;
  /** TPMA_SESSION; bit 0 = continueSession. */
  attributes?: number;
  /** HMAC or password. */
  hmac?: Buffer;
}

/** Empty password authorization (TPM_RS_PW). */
export const PASSWORD: AuthSession = { handle: TPM_RS_PW };
/** A policy session used as authorization, kept open so the caller's finally can flush it. */
export function policyAuth(session: number): AuthSession {
  return { handle: session, attributes: 0x01 };
}

interface Command {
  cc: number;
  handles?: number[];
  auths?: AuthSession[];
  params?: Buffer;
  /** Handles the response carries before its parameters. */
  outHandles?: number;
}

interface Response {
  handles: number[];
  params: Reader;
}

/** Marshal a command (exported for golden-vector tests). */
export function marshalCommand(c: Command): Buffer {
  const body = new Writer();
  for (const h of c.handles ?? []) body.u32(h);
  if (c.auths && c.auths.length > 0) {
    const a = new Writer();
    for (const s of c.auths) a.u32(s.handle).tpm2b(s.nonce ?? Buffer.alloc(0)).u8(s.attributes ?? 0).tpm2b(s.hmac ?? Buffer.alloc(0));
    const auth = a.build();
    body.u32(auth.length).bytes(auth);
  }
  if (c.params) body.bytes(c.params);
  const b = body.build();
  return new Writer()
    .u16(c.auths && c.auths.length > 0 ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS)
    .u32(10 + b.length)
    .u32(c.cc)
    .bytes(b)
    .build();
}

/** Parse a response to `c`; throws TpmError for a non-zero rc. (Exported for tests.) */
export function parseResponse(c: Command, raw: Buffer): Response {
  const name = commandName(c.cc);
  const r = new Reader(raw, `${name} response`);
  const tag = r.u16('tag');
  const size = r.u32('responseSize');
  if (size !== raw.length) throw new TpmResponseError(`${name} response: size field ${size} but ${raw.length} bytes arrived`);
  const rc = r.u32('responseCode');
  if (rc !== 0) {
    if (r.remaining !== 0) throw new TpmResponseError(`${name} response: error 0x${rc.toString(16)} with ${r.remaining} trailing bytes`);
    throw new TpmError(name, rc);
  }
  const withSessions = c.auths !== undefined && c.auths.length > 0;
  const wantTag = withSessions ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS;
  if (tag !== wantTag) throw new TpmResponseError(`${name} response: tag 0x${tag.toString(16)}, expected 0x${wantTag.toString(16)}`);
  const handles: number[] = [];
  for (let i = 0; i < (c.outHandles ?? 0); i++) handles.push(r.u32(`handle ${i}`));
  if (!withSessions) return { handles, params: r.sub(r.remaining, 'parameters') };
  const paramSize = r.u32('parameterSize');
  const params = r.sub(paramSize, 'parameters');
  for (let i = 0; i < (c.auths ?? []).length; i++) {
    r.tpm2b(`authResponse[${i}].nonce`, 64);
    r.u8(`authResponse[${i}].attributes`);
    r.tpm2b(`authResponse[${i}].hmac`, 64);
  }
  r.end('authorization responses');
  return { handles, params };
}

export interface NvPublic {
  nvIndex: number;
  nameAlg: number;
  attributes: number;
  authPolicy: Buffer;
  dataSize: number;
}

export interface CreatedPrimary {
  handle: number;
  /** TPM2B_PUBLIC bytes, size prefix included (what the AzureGuest request carries). */
  outPublic: Buffer;
  public: RsaPublicArea;
  name: Buffer;
}

export interface AttestResult {
  /** TPMS_ATTEST bytes (no size prefix): what was signed. */
  attestBytes: Buffer;
  attest: Attest;
  signature: TpmSignature;
}

/** The decrypt schemes RSA_Decrypt takes. */
export type RsaDecryptScheme = { scheme: 'rsaes' } | { scheme: 'oaep'; hash: 'sha1' | 'sha256' | 'sha384' } | { scheme: 'null' };

const OAEP_HASH = { sha1: TPM_ALG.SHA1, sha256: TPM_ALG.SHA256, sha384: TPM_ALG.SHA384 } as const;

export interface TpmClientOptions {
  /** Upper bound on NV_Read/NV_Write chunks besides the TPM's TPM_PT_NV_BUFFER_MAX. */
  maxNvChunk?: number;
}

/** Largest NV index this client reads (Azure's AK certificate index is 4096 bytes). */
export const MAX_NV_READ = 8192;

/** Commands that leave a transient object or a session behind when they succeed. */
const CREATES_HANDLE = new Set<number>([TPM_CC.CreatePrimary, TPM_CC.StartAuthSession]);
/** Handles listed per GetCapability(TPM_CAP_HANDLES) call, and in all (a TPM has a few slots). */
const HANDLES_PER_CALL = 64;
const MAX_HANDLES = 256;

export class TpmClient {
  private nvBufferMax?: number;
  /** Transient objects and sessions this client created and has not flushed. */
  private readonly owned = new Set<number>();
  /** A command that can create a handle failed: look for one we never learned before the next command. */
  private sweepPending = false;
  private sweeping = false;
  private observer?: (failure?: TpmTransportError) => void;

  constructor(
    readonly transport: TpmTransport,
    private readonly opts: TpmClientOptions = {},
  ) {}

  /**
   * Run one command. Exposed for commands this class does not wrap. A failed CreatePrimary or
   * StartAuthSession may have created what we never learned the handle of (a lost or mangled
   * response): such handles are found and flushed before the next command (recoverHandles), and at
   * once (with one retry) when the TPM says its object or session slots are full.
   */
  async execute(c: Command): Promise<Response> {
    // A sweep that fails (the TPM still away) stays pending; the command then reports its own failure.
    if (this.sweepPending && !this.sweeping) await this.recoverHandles().catch(() => undefined);
    const creates = CREATES_HANDLE.has(c.cc);
    try {
      const res = await this.executeOnce(c);
      if (creates && res.handles[0] !== undefined) this.owned.add(res.handles[0]);
      return res;
    } catch (e) {
      if (!creates || this.sweeping) throw e;
      this.sweepPending = true;
      if (e instanceof TpmError && (e.is('TPM_RC_OBJECT_MEMORY') || e.is('TPM_RC_SESSION_MEMORY'))) {
        const flushed = await this.recoverHandles().catch(() => []);
        if (flushed.length > 0) return this.execute(c);
      }
      throw e;
    }
  }

  /** Told after every command whether the TPM answered (a health view: /status of the sidecar). */
  observe(fn: (failure?: TpmTransportError) => void): void {
    this.observer = fn;
  }

  private async executeOnce(c: Command): Promise<Response> {
    const name = commandName(c.cc);
    let raw: Buffer;
    try {
      raw = await this.transport.send(marshalCommand(c));
    } catch (e) {
      if (e instanceof TpmTransportError) {
        const err = new TpmTransportError(`${name}: ${e.message}`, { ...(e.errno ? { errno: e.errno } : {}), cause: e });
        this.observer?.(err);
        throw err;
      }
      throw e;
    }
    this.observer?.();
    return this.parsed(() => parseResponse(c, raw));
  }

  /**
   * Parse a response; one that does not parse means the byte stream cannot be trusted to be in step
   * (a stray or mangled response): the transport starts over on a fresh connection.
   */
  private async parsed<T>(fn: () => T | Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof TpmResponseError) await this.transport.reset?.().catch(() => undefined);
      throw e;
    }
  }

  /** Handles of one type (TPM_HT.TRANSIENT, TPM_HT.LOADED_SESSION) the TPM holds, as GetCapability lists them. */
  async listHandles(type: number): Promise<number[]> {
    const out: number[] = [];
    let next = type >>> 0;
    for (;;) {
      const { params } = await this.execute({ cc: TPM_CC.GetCapability, params: new Writer().u32(TPM_CAP.HANDLES).u32(next).u32(HANDLES_PER_CALL).build() });
      const page = await this.parsed(() => {
        const more = params.u8('moreData') !== 0;
        const cap = params.u32('capability');
        if (cap !== TPM_CAP.HANDLES) throw new TpmResponseError(`TPM2_GetCapability response: capability ${cap}, asked ${TPM_CAP.HANDLES}`);
        const count = params.u32('count');
        if (count > HANDLES_PER_CALL) throw new TpmResponseError(`TPM2_GetCapability response: ${count} handles, asked for at most ${HANDLES_PER_CALL}`);
        const handles: number[] = [];
        for (let i = 0; i < count; i++) handles.push(params.u32(`handle[${i}]`));
        params.end('handles');
        return { more, handles };
      });
      // Sessions are listed in the HMAC range and may come back as policy handles; both are sessions.
      const sameType = (h: number) => (h >>> 24 === type >>> 24) || (type === TPM_HT.LOADED_SESSION && h >>> 24 === TPM_HT.POLICY_SESSION >>> 24);
      if (page.handles.some((h) => !sameType(h) || h < next)) throw new TpmResponseError(`TPM2_GetCapability response: handles outside 0x${next.toString(16)}.. of the type asked`);
      out.push(...page.handles);
      if (!page.more || page.handles.length === 0 || out.length >= MAX_HANDLES) return out;
      next = (page.handles[page.handles.length - 1] + 1) >>> 0;
    }
  }

  /**
   * Flush every transient object and loaded session this client does not hold: those whose creating
   * command's response was lost or unusable (the TPM made them, we never learned the handle), and, at
   * start-up, those a previous process left (swtpm keeps them across connections; /dev/tpmrm0 shows a
   * fresh file none). Assumes this client is the TPM's only user, as the sidecar is. Returns the handles flushed.
   */
  async recoverHandles(): Promise<number[]> {
    this.sweeping = true;
    try {
      const found = [...(await this.listHandles(TPM_HT.TRANSIENT)), ...(await this.listHandles(TPM_HT.LOADED_SESSION))];
      const flushed: number[] = [];
      for (const h of found) {
        if (this.owned.has(h)) continue;
        try {
          await this.flushContext(h);
          flushed.push(h);
        } catch (e) {
          // Gone in between: nothing to flush. Anything else (transport) leaves the sweep pending.
          if (!(e instanceof TpmError)) throw e;
        }
      }
      this.sweepPending = false;
      return flushed;
    } finally {
      this.sweeping = false;
    }
  }

  /** Stop tracking a handle that no longer names our object (the TPM was reset): never flushed by us. */
  forgetHandle(handle: number): void {
    this.owned.delete(handle);
  }

  close(): Promise<void> {
    return this.transport.close();
  }

  async startup(type: number = TPM_SU.CLEAR): Promise<void> {
    await this.execute({ cc: TPM_CC.Startup, params: new Writer().u16(type).build() });
  }

  /** One TPM property (TPM_CAP_TPM_PROPERTIES), or undefined when the TPM does not report it. */
  async getProperty(property: number): Promise<number | undefined> {
    return this.parsed(async () => {
      const { params } = await this.execute({ cc: TPM_CC.GetCapability, params: new Writer().u32(TPM_CAP.TPM_PROPERTIES).u32(property).u32(1).build() });
      params.u8('moreData');
      const cap = params.u32('capability');
      if (cap !== TPM_CAP.TPM_PROPERTIES) throw new TpmResponseError(`TPM2_GetCapability response: capability ${cap}, asked ${TPM_CAP.TPM_PROPERTIES}`);
      const count = params.u32('count');
      if (count > 1) throw new TpmResponseError(`TPM2_GetCapability response: ${count} properties, asked for 1`);
      if (count === 0) return undefined;
      const p = params.u32('property');
      const v = params.u32('value');
      params.end('properties');
      return p === property ? v : undefined;
    });
  }

  /** NV chunk size: TPM_PT_NV_BUFFER_MAX (asked once), bounded by maxNvChunk; 512 if the TPM will not say. */
  async nvChunkSize(): Promise<number> {
    if (this.nvBufferMax === undefined) {
      let v: number | undefined;
      try {
        v = await this.getProperty(TPM_PT.NV_BUFFER_MAX);
      } catch (e) {
        if (!(e instanceof TpmError)) throw e;
      }
      this.nvBufferMax = v !== undefined && v >= 64 && v <= 4096 ? v : 512;
    }
    return Math.min(this.nvBufferMax, this.opts.maxNvChunk ?? Infinity);
  }

  async nvReadPublic(index: number): Promise<{ public: NvPublic; name: Buffer }> {
    return this.parsed(async () => {
      const { params } = await this.execute({ cc: TPM_CC.NV_ReadPublic, handles: [index] });
      const body = params.sub(params.u16('nvPublic.size'), 'nvPublic');
      const nv: NvPublic = {
        nvIndex: body.u32('nvIndex'),
        nameAlg: body.u16('nameAlg'),
        attributes: body.u32('attributes'),
        authPolicy: body.tpm2b('authPolicy', 64),
        dataSize: body.u16('dataSize'),
      };
      body.end('nvPublic');
      const name = params.tpm2b('nvName', 66);
      params.end('nvName');
      if (nv.nvIndex !== index) throw new TpmResponseError(`TPM2_NV_ReadPublic response: index 0x${nv.nvIndex.toString(16)}, asked 0x${index.toString(16)}`);
      return { public: nv, name };
    });
  }

  /**
   * Read `size` bytes (default: the whole index) from `offset`, in chunks the TPM accepts, with owner
   * authorization and an empty password (Azure's convention for every CVM index).
   */
  async nvRead(index: number, opts: { size?: number; offset?: number; auth?: number } = {}): Promise<Buffer> {
    return this.parsed(async () => {
      const offset = opts.offset ?? 0;
      const size = opts.size ?? (await this.nvReadPublic(index)).public.dataSize - offset;
      if (size < 0 || size > MAX_NV_READ) throw new TpmResponseError(`NV index 0x${index.toString(16)}: ${size} bytes to read is outside 0..${MAX_NV_READ}`);
      const chunk = await this.nvChunkSize();
      const parts: Buffer[] = [];
      for (let done = 0; done < size; ) {
        const n = Math.min(chunk, size - done);
        const { params } = await this.execute({
          cc: TPM_CC.NV_Read,
          handles: [opts.auth ?? TPM_RH.OWNER, index],
          auths: [PASSWORD],
          params: new Writer().u16(n).u16(offset + done).build(),
        });
        const data = params.tpm2b('data', chunk);
        params.end('data');
        if (data.length !== n) throw new TpmResponseError(`TPM2_NV_Read response: ${data.length} bytes, asked ${n}`);
        parts.push(data);
        done += n;
      }
      return Buffer.concat(parts);
    });
  }

  async nvDefineSpace(index: number, size: number, attributes: number, opts: { nameAlg?: number; authPolicy?: Buffer } = {}): Promise<void> {
    const pub = new Writer()
      .u32(index)
      .u16(opts.nameAlg ?? TPM_ALG.SHA256)
      .u32(attributes)
      .tpm2b(opts.authPolicy ?? Buffer.alloc(0))
      .u16(size)
      .build();
    await this.execute({
      cc: TPM_CC.NV_DefineSpace,
      handles: [TPM_RH.OWNER],
      auths: [PASSWORD],
      params: new Writer().tpm2b(Buffer.alloc(0)).tpm2b(pub).build(),
    });
  }

  async nvUndefineSpace(index: number): Promise<void> {
    await this.execute({ cc: TPM_CC.NV_UndefineSpace, handles: [TPM_RH.OWNER, index], auths: [PASSWORD] });
  }

  /** Write `data` at `offset`, chunked like nvRead. */
  async nvWrite(index: number, data: Buffer, opts: { offset?: number; auth?: number } = {}): Promise<void> {
    const chunk = await this.nvChunkSize();
    const offset = opts.offset ?? 0;
    for (let done = 0; done < data.length || (data.length === 0 && done === 0); ) {
      const part = data.subarray(done, done + chunk);
      await this.execute({
        cc: TPM_CC.NV_Write,
        handles: [opts.auth ?? TPM_RH.OWNER, index],
        auths: [PASSWORD],
        params: new Writer().tpm2b(part).u16(offset + done).build(),
      });
      done += part.length;
      if (part.length === 0) break;
    }
  }

  /** PCR values of one bank, in the order asked (the TPM returns at most 8 per call). */
  async pcrRead(hash: number, pcrs: readonly number[]): Promise<Map<number, Buffer>> {
    return this.parsed(async () => {
      const size = HASH_SIZE[hash]?.size;
      if (size === undefined) throw new RangeError(`PCR bank 0x${hash.toString(16)} is not a supported hash`);
      const out = new Map<number, Buffer>();
      let remaining = [...new Set(pcrs)].sort((a, b) => a - b);
      while (remaining.length > 0) {
        const { params } = await this.execute({ cc: TPM_CC.PCR_Read, params: writePcrSelections(new Writer(), [{ hash, pcrs: remaining }]).build() });
        params.u32('pcrUpdateCounter');
        const sel = readPcrSelections(params, 'pcrSelectionOut');
        const count = params.u32('pcrValues.count');
        if (count > 8) throw new TpmResponseError(`TPM2_PCR_Read response: ${count} digests, at most 8 allowed`);
        const digests: Buffer[] = [];
        for (let i = 0; i < count; i++) digests.push(params.tpm2b(`pcrValues[${i}]`, 64));
        params.end('pcrValues');
        const returned = sel.filter((s) => s.hash === hash).flatMap((s) => s.pcrs);
        if (sel.some((s) => s.hash !== hash && s.pcrs.length > 0)) throw new TpmResponseError('TPM2_PCR_Read response: digests of a bank that was not asked');
        if (returned.length !== count) throw new TpmResponseError(`TPM2_PCR_Read response: ${returned.length} PCRs selected but ${count} digests`);
        if (count === 0) throw new TpmResponseError(`TPM2_PCR_Read: the TPM returned none of PCR ${remaining.join(',')} (bank not allocated?)`);
        returned.forEach((p, i) => {
          if (!remaining.includes(p)) throw new TpmResponseError(`TPM2_PCR_Read response: PCR ${p} was not asked`);
          if (digests[i].length !== size) throw new TpmResponseError(`TPM2_PCR_Read response: PCR ${p} digest is ${digests[i].length} bytes, expected ${size}`);
          out.set(p, digests[i]);
        });
        remaining = remaining.filter((p) => !out.has(p));
      }
      return new Map(pcrs.map((p) => [p, out.get(p) as Buffer]));
    });
  }

  /** Extend one PCR in one bank (tests, and the simulated CVM's "boot measurements"). */
  async pcrExtend(pcr: number, hash: number, digest: Buffer): Promise<void> {
    const size = HASH_SIZE[hash]?.size;
    if (size === undefined || digest.length !== size) throw new RangeError(`PCR_Extend digest must be ${size ?? '?'} bytes for bank 0x${hash.toString(16)}`);
    await this.execute({ cc: TPM_CC.PCR_Extend, handles: [pcr], auths: [PASSWORD], params: new Writer().u32(1).u16(hash).bytes(digest).build() });
  }

  /** CreatePrimary with an empty sensitive area, no outsideInfo and no creation PCRs. */
  async createPrimary(hierarchy: number, template: RsaPublicArea): Promise<CreatedPrimary> {
    return this.parsed(async () => {
      const params = new Writer()
        .tpm2b(new Writer().tpm2b(Buffer.alloc(0)).tpm2b(Buffer.alloc(0)).build())
        .bytes(marshalPublic2b(template))
        .tpm2b(Buffer.alloc(0))
        .u32(0)
        .build();
      const res = await this.execute({ cc: TPM_CC.CreatePrimary, handles: [hierarchy], auths: [PASSWORD], params, outHandles: 1 });
      const handle = res.handles[0];
      try {
        const p = res.params;
        const pubBytes = p.tpm2b('outPublic', 1024);
        const pr = new Reader(pubBytes, 'TPM2_CreatePrimary outPublic');
        const area = readPublic(pr, 'outPublic');
        pr.end('outPublic');
        p.tpm2b('creationData', 2048);
        p.tpm2b('creationHash', 64);
        p.u16('creationTicket.tag');
        p.u32('creationTicket.hierarchy');
        p.tpm2b('creationTicket.digest', 64);
        const name = p.tpm2b('name', 66);
        p.end('name');
        return { handle, outPublic: new Writer().tpm2b(pubBytes).build(), public: area, name };
      } catch (e) {
        // A response we cannot use must not leave the object loaded (flushed on a fresh connection).
        if (e instanceof TpmResponseError) await this.transport.reset?.().catch(() => undefined);
        this.sweepPending = true;
        await this.flushContext(handle).catch(() => undefined);
        throw e;
      }
    });
  }

  /** Public area of a loaded or persistent object: TPM2B_PUBLIC bytes (size prefix included) and its Name. */
  async readPublic(handle: number): Promise<{ outPublic: Buffer; public: RsaPublicArea; name: Buffer }> {
    return this.parsed(async () => {
      const { params } = await this.execute({ cc: TPM_CC.ReadPublic, handles: [handle] });
      const pubBytes = params.tpm2b('outPublic', 1024);
      const pr = new Reader(pubBytes, 'TPM2_ReadPublic outPublic');
      const area = readPublic(pr, 'outPublic');
      pr.end('outPublic');
      const name = params.tpm2b('name', 66);
      params.tpm2b('qualifiedName', 66);
      params.end('qualifiedName');
      return { outPublic: new Writer().tpm2b(pubBytes).build(), public: area, name };
    });
  }

  private readAttestResult(p: Reader, what: string): AttestResult {
    const attestBytes = p.tpm2b(what, 1024);
    const signature = readSignature(p, 'signature');
    p.end('signature');
    return { attestBytes, attest: parseAttest(attestBytes, what), signature };
  }

  /** Certify `object` with `signKey` (both with empty passwords), the key's own scheme (inScheme NULL). */
  async certify(object: number, signKey: number, qualifyingData: Buffer = Buffer.alloc(0)): Promise<AttestResult> {
    return this.parsed(async () => {
      const { params } = await this.execute({
        cc: TPM_CC.Certify,
        handles: [object, signKey],
        auths: [PASSWORD, PASSWORD],
        params: new Writer().tpm2b(qualifyingData).u16(TPM_ALG.NULL).build(),
      });
      return this.readAttestResult(params, 'certifyInfo');
    });
  }

  async quote(signKey: number, selection: readonly PcrSelection[], qualifyingData: Buffer = Buffer.alloc(0)): Promise<AttestResult> {
    return this.parsed(async () => {
      const w = new Writer().tpm2b(qualifyingData).u16(TPM_ALG.NULL);
      writePcrSelections(w, selection);
      const { params } = await this.execute({ cc: TPM_CC.Quote, handles: [signKey], auths: [PASSWORD], params: w.build() });
      return this.readAttestResult(params, 'quoted');
    });
  }

  /** An unbound, unsalted session (POLICY or TRIAL) with SHA-256, no parameter encryption. */
  async startAuthSession(type: number = TPM_SE.POLICY, authHash: number = TPM_ALG.SHA256): Promise<{ handle: number; nonceTpm: Buffer }> {
    return this.parsed(async () => {
      const params = new Writer().tpm2b(randomBytes(32)).tpm2b(Buffer.alloc(0)).u8(type).u16(TPM_ALG.NULL).u16(authHash).build();
      const res = await this.execute({ cc: TPM_CC.StartAuthSession, handles: [TPM_RH.NULL, TPM_RH.NULL], params, outHandles: 1 });
      try {
        const nonceTpm = res.params.tpm2b('nonceTPM', 64);
        res.params.end('nonceTPM');
        return { handle: res.handles[0], nonceTpm };
      } catch (e) {
        if (e instanceof TpmResponseError) await this.transport.reset?.().catch(() => undefined);
        this.sweepPending = true;
        await this.flushContext(res.handles[0]).catch(() => undefined);
        throw e;
      }
    });
  }

  /** PolicyPCR; an empty digest lets the TPM use the current PCR values. */
  async policyPcr(session: number, selection: readonly PcrSelection[], pcrDigest: Buffer = Buffer.alloc(0)): Promise<void> {
    const w = new Writer().tpm2b(pcrDigest);
    writePcrSelections(w, selection);
    await this.execute({ cc: TPM_CC.PolicyPCR, handles: [session], params: w.build() });
  }

  async policyGetDigest(session: number): Promise<Buffer> {
    return this.parsed(async () => {
      const { params } = await this.execute({ cc: TPM_CC.PolicyGetDigest, handles: [session] });
      const d = params.tpm2b('policyDigest', 64);
      params.end('policyDigest');
      return d;
    });
  }

  /**
   * RSA_Decrypt with the given authorization (a policy session for PCR-bound keys), empty label by default.
   * The result is a view into the response buffer, the only place the plaintext is: wipe it when done.
   */
  async rsaDecrypt(key: number, auth: AuthSession, cipherText: Buffer, scheme: RsaDecryptScheme, label: Buffer = Buffer.alloc(0)): Promise<Buffer> {
    return this.parsed(async () => {
      const w = new Writer().tpm2b(cipherText);
      if (scheme.scheme === 'rsaes') w.u16(TPM_ALG.RSAES);
      else if (scheme.scheme === 'oaep') w.u16(TPM_ALG.OAEP).u16(OAEP_HASH[scheme.hash]);
      else w.u16(TPM_ALG.NULL);
      w.tpm2b(label);
      const { params } = await this.execute({ cc: TPM_CC.RSA_Decrypt, handles: [key], auths: [auth], params: w.build() });
      // A view of the one response buffer (no copy anywhere on the way): the caller's wipe clears the secret.
      const message = params.tpm2bView('message', 512);
      params.end('message');
      return message;
    });
  }

  async flushContext(handle: number): Promise<void> {
    this.owned.delete(handle);
    await this.execute({ cc: TPM_CC.FlushContext, params: new Writer().u32(handle).build() });
  }

  /** Make a transient object persistent at `persistent` (or, given a persistent handle twice, evict it). */
  async evictControl(object: number, persistent: number, auth: number = TPM_RH.OWNER): Promise<void> {
    await this.execute({ cc: TPM_CC.EvictControl, handles: [auth, object], auths: [PASSWORD], params: new Writer().u32(persistent).build() });
  }

  /** Run `fn` with a transient handle and always flush it, whatever `fn` does. */
  async withHandle<T>(handle: number, fn: (handle: number) => Promise<T>): Promise<T> {
    try {
      return await fn(handle);
    } finally {
      await this.flushContext(handle).catch(() => undefined);
    }
  }
}
