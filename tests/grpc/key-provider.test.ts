/**
 * The gRPC key provider on the real local stack (sidecar with its gRPC listener + IMDS/MAA/Key Vault/
 * Managed HSM emulators on loopback), driven by grpc-js's generic client with protobufjs messages:
 * WrapKey → UnWrapKey round trips under both package names, the release going through the same
 * gate as POST /key/release (allowlists, audit line, metrics), and every refusal as a status code.
 */
import { createHash, generateKeyPairSync, publicEncrypt, constants, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { parseReport } from '../../src/snp/report';
import { capturingLogger } from '../hardening/log-capture';
import { postJson } from '../helpers/sidecar';
import { call, ocicryptUnwrapInput, ocicryptWrapInput, unwrap } from '../helpers/grpc';

const PACKAGES = ['keyprovider', 'key_provider'] as const;

describe('gRPC key provider on the local stack', () => {
  let stack: LocalStack;
  let target: string;
  let dir: string;
  let fetch: ReturnType<typeof createHttpsFetch>;
  const { logger, lines } = capturingLogger('debug');
  const keyPair = generateKeyPairSync('rsa', { modulusLength: 3072 });
  const otherPair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const optsData = Buffer.from(JSON.stringify({ symkey: randomBytes(32).toString('base64'), cipher: 'AES_256_CTR_HMAC_SHA256', digest: 'sha256:abc' }));

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-grpc-'));
    // A short deadline, so the hanging-vault case ends quickly (releases here take well under a second).
    stack = await startLocalStack({ stateDir: dir, port: 0, grpcPort: 0, logger, limits: { requestDeadlineMs: 4000 } });
    target = stack.state.grpcTarget as string;
    const ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
    fetch = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
    const credential = providerCredential(new TokenProvider({ imdsEndpoint: stack.state.imdsUrl }));
    const policy = (hostData: string) =>
      buildReleasePolicy({
        authority: `https://${stack.state.maaEndpoint}`,
        anyOfGroups: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: hostData }]],
      });
    const common = { vaultEndpoint: stack.state.vaultEndpoint, credential, fetch, relaxedChallenge: true };
    await importReleasableKey({ ...common, name: 'layer-key', jwk: sdkJwkFor('RSA-HSM', keyPair.privateKey), policy: policy(stack.state.hostData) });
    await importReleasableKey({ ...common, name: 'other-platform-key', jwk: sdkJwkFor('RSA-HSM', otherPair.privateKey), policy: policy('00'.repeat(32)) });
    await importReleasableKey({
      ...common,
      vaultEndpoint: stack.state.hsmEndpoint,
      name: 'oct-key',
      jwk: sdkJwkFor('oct-HSM', randomBytes(32)),
      policy: policy(stack.state.hostData),
    });
    // The reference's key info file, beside where the key path points.
    fs.writeFileSync(path.join(dir, 'layer-key.pub.pem'), keyPair.publicKey.export({ type: 'spki', format: 'pem' }));
    fs.writeFileSync(
      path.join(dir, 'layer-key-info.json'),
      JSON.stringify({ public_key_path: path.join(dir, 'layer-key.pub.pem'), kms_endpoint: stack.state.vaultEndpoint, attester_endpoint: stack.state.maaEndpoint }),
    );
  }, 90_000);
  afterAll(async () => {
    fetch?.destroy();
    await stack?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const packetFor = (kid: string, wrapped: Buffer, extra: Record<string, unknown> = {}) =>
    JSON.stringify({ kid, wrapped_data: wrapped.toString('base64'), wrap_type: 'rsa_3072', kms_endpoint: stack.state.vaultEndpoint, attester_endpoint: stack.state.maaEndpoint, ...extra });
  const oaep = (key: typeof keyPair.publicKey, data: Buffer) => publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, data);

  it.each(PACKAGES)('SayHello answers "Hello <name>" under package %s', async (pkg) => {
    const r = await call(target, pkg, 'SayHello', { name: 'ocicrypt' });
    expect(r).toEqual({ ok: true, value: { message: 'Hello ocicrypt' } });
  });

  it.each(PACKAGES)('WrapKey → UnWrapKey gives the layer options back under package %s, through the vault', async (pkg) => {
    const wrapped = await call<{ key_provider_key_wrap_protocol_output: Buffer }>(target, pkg, 'WrapKey', {
      key_provider_key_wrap_protocol_input: ocicryptWrapInput(`skr:${path.join(dir, 'layer-key')}`, optsData),
    });
    if (!wrapped.ok) throw new Error(wrapped.details);
    const out = JSON.parse(wrapped.value.key_provider_key_wrap_protocol_output.toString()) as { keywrapresults: { annotation: string } };
    const packet = Buffer.from(out.keywrapresults.annotation, 'base64');
    const p = JSON.parse(packet.toString()) as Record<string, string>;
    expect(Object.keys(p)).toEqual(['kid', 'wrapped_data', 'wrap_type', 'kms_endpoint', 'attester_endpoint']);
    expect(p).toMatchObject({ kid: 'layer-key', wrap_type: 'rsa_3072', kms_endpoint: stack.state.vaultEndpoint, attester_endpoint: stack.state.maaEndpoint });

    const before = lines.length;
    const r = await unwrap(target, pkg, ocicryptUnwrapInput(packet));
    expect(r).toEqual({ ok: true, output: { keyunwrapresults: { optsdata: optsData.toString('base64') } } });
    // The same audit line as /key/release, marked as gRPC; never the key or the options.
    const audit = lines
      .slice(before)
      .filter((l) => l.includes('"audit":"key-release"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(audit).toEqual([expect.objectContaining({ api: 'grpc', kid: 'layer-key', outcome: 'ok', status: 200, vault: stack.state.vaultEndpoint })]);
    const all = JSON.stringify(lines);
    expect(all).not.toContain(optsData.toString('base64'));
    expect(all).not.toContain(keyPair.privateKey.export({ format: 'jwk' }).d as string);
  });

  it('accepts the attestation agent name in any case', async () => {
    const r = await unwrap(target, 'keyprovider', ocicryptUnwrapInput(packetFor('layer-key', oaep(keyPair.publicKey, optsData)), 'SKR'));
    expect(r.ok).toBe(true);
  });

  it('counts calls per method and status code, and releases in the same counter as HTTP', async () => {
    const metrics = await (await globalThis.fetch(`${stack.sidecar.url}/metrics`)).text();
    expect(metrics).toMatch(/skr_grpc_requests_total\{code="OK",method="UnWrapKey",outcome="ok"\} [1-9]/);
    expect(metrics).toMatch(/skr_key_releases_total\{outcome="ok"\} [1-9]/);
  });

  it('an annotation naming a vault outside the allowlist: PERMISSION_DENIED with the HTTP 403 message, nothing sent', async () => {
    const packet = packetFor('layer-key', oaep(keyPair.publicKey, optsData), { kms_endpoint: 'evil.example.com' });
    const r = await unwrap(target, 'keyprovider', ocicryptUnwrapInput(packet));
    const http = await postJson(`${stack.sidecar.url}/key/release`, { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: 'evil.example.com', kid: 'layer-key' });
    expect(http.status).toBe(403);
    expect(r).toEqual({ ok: false, code: status.PERMISSION_DENIED, details: http.json.error });
  });

  it('a key whose release policy does not match: PERMISSION_DENIED carrying what the HTTP 403 carries', async () => {
    const r = await unwrap(target, 'key_provider', ocicryptUnwrapInput(packetFor('other-platform-key', oaep(otherPair.publicKey, optsData))));
    const http = await postJson(`${stack.sidecar.url}/key/release`, { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: stack.state.vaultEndpoint, kid: 'other-platform-key' });
    expect(http.status).toBe(403);
    if (r.ok) throw new Error('released');
    expect(r.code).toBe(status.PERMISSION_DENIED);
    // Request ids differ per call; the explanation is the same.
    const strip = (s: string) => s.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, 'ID');
    expect(strip(r.details)).toBe(strip(http.json.error as string));
    // The structured explanation the 403 body carries, in the skr-explanation-bin trailer.
    expect(http.json.explanation).toMatchObject({ policyRead: true, claimsSatisfyPolicy: false });
    expect(r.explanation).toEqual(http.json.explanation);
  });

  it('a vault that never answers: DEADLINE_EXCEEDED naming the deadline; one answering garbage: UNAVAILABLE naming the vault', async () => {
    const packet = ocicryptUnwrapInput(packetFor('layer-key', oaep(keyPair.publicKey, optsData)));
    stack.vault.faults.inject({ route: 'release', kind: 'hang' });
    const hung = await unwrap(target, 'keyprovider', packet);
    stack.vault.faults.clear();
    expect(hung).toEqual({ ok: false, code: status.DEADLINE_EXCEEDED, details: 'request deadline of 4 s exceeded (SKR_REQUEST_DEADLINE_SECONDS)' });
    stack.vault.faults.inject({ route: 'release', kind: 'malformed-json', times: Infinity });
    const failing = await unwrap(target, 'keyprovider', packet);
    stack.vault.faults.clear();
    expect(failing).toEqual({ ok: false, code: status.UNAVAILABLE, details: expect.stringMatching(/vault/i) });
    // And it serves again once the vault does.
    expect((await unwrap(target, 'keyprovider', packet)).ok).toBe(true);
  });

  it('wrapped to another key: INVALID_ARGUMENT that does not say how the decryption failed', async () => {
    const r = await unwrap(target, 'keyprovider', ocicryptUnwrapInput(packetFor('layer-key', oaep(otherPair.publicKey, optsData))));
    expect(r).toEqual({ ok: false, code: status.INVALID_ARGUMENT, details: expect.stringMatching(/^wrapped_data does not unwrap with key "layer-key" \(RSA-OAEP-SHA256\)/) });
  });

  it('a symmetric key: INVALID_ARGUMENT, the provider needs an RSA key', async () => {
    const packet = packetFor('oct-key', oaep(keyPair.publicKey, optsData), { kms_endpoint: stack.state.hsmEndpoint });
    const r = await unwrap(target, 'keyprovider', ocicryptUnwrapInput(packet));
    expect(r).toEqual({ ok: false, code: status.INVALID_ARGUMENT, details: expect.stringContaining('is a "oct" key; the key provider unwraps with an RSA private key') });
  });

  it.each([
    ['a KBS resource kid', { kid: 'kbs:///default/key/1', wrapped_data: 'AAAA', iv: 'AAAAAAAAAAAAAAAA', wrap_type: 'A256GCM' }],
    ['an A256CTR wrap type', { kid: 'k', wrapped_data: 'AAAA', wrap_type: 'A256CTR' }],
    ['a v2 packet with a provider', { provider: 'kbs', kid: 'k', wrapped_data: 'AAAA', provider_settings: {}, annotations: {} }],
  ])('a CoCo packet (%s): INVALID_ARGUMENT naming Azure Key Vault / Managed HSM', async (_what, packet) => {
    const r = await unwrap(target, 'keyprovider', ocicryptUnwrapInput(JSON.stringify(packet)));
    expect(r).toEqual({ ok: false, code: status.INVALID_ARGUMENT, details: expect.stringContaining('this key provider releases keys from Azure Key Vault / Managed HSM') });
  });

  it.each<[string, Buffer, RegExp]>([
    ['another attestation agent', ocicryptUnwrapInput('{}', 'sample_kbc'), /attestation agent "sample_kbc" is not this provider's/],
    ['no dc', Buffer.from('{"op":"keyunwrap","keyunwrapparams":{"dc":null,"annotation":"e30="}}'), /keyunwrapparams\.dc is null/],
    ['the wrong op', Buffer.from('{"op":"keywrap"}'), /this method takes op "keyunwrap"/],
    ['not JSON', Buffer.from('{"op":'), /not JSON/],
    ['annotation not base64', Buffer.from('{"op":"keyunwrap","keyunwrapparams":{"dc":{"Parameters":{"attestation-agent":["c2ty"]}},"annotation":"%%%"}}'), /annotation is not standard base64/],
    ['a packet without kms_endpoint', ocicryptUnwrapInput('{"kid":"k","wrapped_data":"AAAA","attester_endpoint":"x"}'), /kms_endpoint is missing/],
    ['an endpoint that is no DNS name', ocicryptUnwrapInput('{"kid":"k","wrapped_data":"AAAA","attester_endpoint":"a b","kms_endpoint":"v.vault.azure.net"}'), /MAA endpoint "a b": is not a host name/],
  ])('%s: INVALID_ARGUMENT naming what is wrong', async (_what, input, message) => {
    const r = await unwrap(target, 'keyprovider', input);
    if (r.ok) throw new Error('accepted');
    expect([r.code, r.details]).toEqual([status.INVALID_ARGUMENT, expect.stringMatching(message)]);
  });

  it('GetReport: REPORT_DATA is sha256 of the hex string\'s own bytes (as the reference computes it), not of the bytes it spells', async () => {
    // The reference passes []byte(reportDataStr) to GenerateMAAReportData: a client that hex-decodes
    // first gets a report it cannot match, so we hash the string exactly as it does.
    const hex = createHash('sha256').update('nonce').digest('hex');
    const r = await call<{ report_hex_string: string }>(target, 'keyprovider', 'GetReport', { report_data_hex_string: hex });
    if (!r.ok) throw new Error(r.details);
    const report = parseReport(Buffer.from(r.value.report_hex_string, 'hex'));
    const expected = Buffer.concat([createHash('sha256').update(hex, 'utf8').digest(), Buffer.alloc(32)]);
    expect(report.reportData.toString('hex')).toBe(expected.toString('hex'));
    expect(report.reportData.subarray(0, 32)).not.toEqual(createHash('sha256').update(Buffer.from(hex, 'hex')).digest());
  });

  it('GetAttestationData: the report binds the runtime data; certs, TCB and UVM endorsement as /attest/combined', async () => {
    const runtime = Buffer.from('{"pub":"x"}');
    const r = await call<Record<string, string>>(target, 'key_provider', 'GetAttestationData', { b64_runtime_data_string: runtime.toString('base64') });
    if (!r.ok) throw new Error(r.details);
    const report = parseReport(Buffer.from(r.value.attestation_report, 'base64'));
    expect(report.reportData.subarray(0, 32)).toEqual(createHash('sha256').update(runtime).digest());
    const combined = await postJson(`${stack.sidecar.url}/attest/combined`, { runtime_data: runtime.toString('base64') });
    expect(r.value.certs).toBe(combined.json.endorsements);
    expect(r.value.endorsed_tcb).toBe(combined.json.endorsed_tcb);
    expect(r.value.uvm_reference_info).toBe(combined.json.uvm_endorsements);
  });

  it('WrapKey with a key path that has no info file: INVALID_ARGUMENT naming the file, not its content', async () => {
    const r = await call(target, 'keyprovider', 'WrapKey', { key_provider_key_wrap_protocol_input: ocicryptWrapInput(`skr:${path.join(dir, 'nope')}`, optsData) });
    expect(r).toEqual({ ok: false, code: status.INVALID_ARGUMENT, details: expect.stringMatching(/cannot read key info file ".*nope-info\.json": ENOENT/) });
  });
});
