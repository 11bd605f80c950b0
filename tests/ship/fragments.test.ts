/**
 * fragments/ scripts with a fake `az` on PATH that records its arguments and behaves like the
 * confcom extension 1.2.7: acipolicygen injects a ccePolicy (Rego with `containers := [JSON]`, one
 * `layers` list per container) into the template and prints its sha256, reading images from the
 * `--tar` map when given; acifragmentgen writes NS.rego (+ .cose holding the feed when signing; the
 * feed is --feed, else the --image-target name, else empty, as confcom does); --generate-import
 * appends to fragments.json. FAKE_AZ_DOCKER_ARCHIVE=1 puts dmverity-vhd's log line first in every
 * `layers`, as the real tool does with a docker-archive. `npm run confcom:test` runs the real one.
 * The scripts run on a PATH of this file's own (the system's tools minus az and skr), so an Azure
 * CLI or skr installed on the machine cannot change what they find.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI, REPO, SKR_BIN, killAll, readJson, run } from './helpers';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-ship-fragments-'));
const fakeBin = path.join(tmp, 'bin');
const azLog = path.join(tmp, 'az.log');
const script = (name: string) => path.join(REPO, 'fragments', name);

const FAKE_AZ = `#!${process.execPath}
const fs = require('fs');
const crypto = require('crypto');
const argv = process.argv.slice(2);
fs.appendFileSync(process.env.FAKE_AZ_LOG, JSON.stringify({ cwd: process.cwd(), argv }) + '\\n');
const opt = (n) => { const i = argv.indexOf(n); return i >= 0 ? argv[i + 1] : undefined; };
const has = (n) => argv.includes(n);
const cmd = argv.slice(0, 2).join(' ');
const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
const tarMap = opt('--tar') ? JSON.parse(fs.readFileSync(opt('--tar'), 'utf8')) : undefined;
// As confcom: each image's layers come from its tar (which must exist), else from a Docker API or registry.
const layersOf = (image) => {
  if (tarMap) {
    if (!tarMap[image] || !fs.existsSync(tarMap[image])) { console.error('fake az: no tar for ' + image + ' and no Docker API'); process.exit(1); }
  }
  const hashes = [0, 1, 2].map((i) => sha(image + '#' + i));
  return process.env.FAKE_AZ_DOCKER_ARCHIVE ? ['not able to parse in OCI format"', ...hashes] : hashes;
};
const imageName = (i) => i.includes('@') ? i.split('@')[0] : i.split(':')[0];
if (cmd === 'extension show') {
  if (process.env.FAKE_AZ_NO_CONFCOM) { console.error("ERROR: The extension confcom is not installed."); process.exit(1); }
  console.log(JSON.stringify({ name: 'confcom', version: '1.2.0' }));
} else if (cmd === 'confcom acipolicygen') {
  const file = opt('-a');
  const t = JSON.parse(fs.readFileSync(file, 'utf8'));
  const params = {};
  for (const [k, v] of Object.entries(t.parameters || {})) params[k] = v.defaultValue;
  if (opt('-p')) for (const [k, v] of Object.entries(JSON.parse(fs.readFileSync(opt('-p'), 'utf8')).parameters)) params[k] = v.value;
  const resolve = (s) => s.replace(/^\\[parameters\\('([^']+)'\\)\\]$/, (_, n) => params[n]);
  const g = t.resources.find((r) => r.type === 'Microsoft.ContainerInstance/containerGroups');
  const frags = has('--include-fragments') ? JSON.parse(fs.readFileSync(opt('--fragments-json'), 'utf8')).fragments : [];
  const containers = g.properties.containers.map((c) => ({ id: resolve(c.properties.image), name: c.name,
    layers: layersOf(resolve(c.properties.image)), allow_stdio_access: has('--debug-mode') }));
  containers.push({ id: 'mcr.microsoft.com/aci/aci-cc-infra-fragment:pause', name: 'pause-container', layers: [sha('pause')], allow_stdio_access: false });
  const rego = ['package policy', 'api_version := "0.10.0"', 'fragments := ' + JSON.stringify(frags),
    'containers := ' + JSON.stringify(containers), 'allow_properties_access := true'].join('\\n');
  const cc = g.properties.confidentialComputeProperties;
  if (cc.ccePolicy) {
    process.stdout.write('Do you want to overwrite the CCE Policy currently in container group "x" in the ARM Template? (y/n) ');
    const answer = fs.readFileSync(0, 'utf8').trim();
    if (answer !== 'y') process.exit(0);
  }
  cc.ccePolicy = Buffer.from(rego).toString('base64');
  fs.writeFileSync(file, JSON.stringify(t, null, 4));
  const digest = sha(rego);
  console.log(process.env.FAKE_AZ_BAD_HASH ? digest.replace(/^./, (c) => (c === '0' ? '1' : '0')) : digest);
} else if (cmd === 'confcom acifragmentgen' && has('--generate-import')) {
  const f = opt('--fragments-json');
  const cur = fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : {};
  // From a signed file: the feed and issuer its COSE header holds; from an image: those of the fragment attached to it.
  const signed = opt('--fragment-path') ? JSON.parse(fs.readFileSync(opt('--fragment-path')).subarray(2).toString()) : undefined;
  cur.fragments = [...(cur.fragments || []), { feed: signed ? signed.feed : imageName(opt('--image')), includes: ['containers'],
    issuer: signed ? signed.iss : 'did:x509:0:sha256:0NWnhcxjUwmwLCd7A-PubQRq08ig3icQxpW5d2f4Rbc::subject:CN:Contoso', minimum_svn: opt('--minimum-svn') }];
  fs.writeFileSync(f, JSON.stringify(cur, null, 4));
} else if (cmd === 'confcom acifragmentgen') {
  const cfg = JSON.parse(fs.readFileSync(opt('-i'), 'utf8'));
  const ns = opt('--namespace');
  const containers = cfg.containers.map((c) => ({ id: c.properties.image, name: c.name, layers: layersOf(c.properties.image) }));
  const text = 'package ' + ns + '\\nsvn := "' + opt('--svn') + '"\\nfragments := []\\ncontainers := ' + JSON.stringify(containers) + '\\n';
  fs.writeFileSync(ns + '.rego', text);
  const feed = opt('--feed') || (opt('--image-target') ? imageName(opt('--image-target')) : '');
  const header = { feed, iss: 'did:x509:0:sha256:0NWnhcxjUwmwLCd7A-PubQRq08ig3icQxpW5d2f4Rbc::subject:CN:Contoso', payload: text };
  if (opt('--key')) fs.writeFileSync(ns + '.rego.cose', Buffer.concat([Buffer.from([0xd2, 0x84]), Buffer.from(JSON.stringify(header))]));
} else {
  console.error('fake az: unsupported ' + argv.join(' '));
  process.exit(2);
}
`;

/**
 * The system's tools without az and skr, and this node: tests that need a tool to be missing must
 * not depend on what the machine has installed (the confcom kit puts Debian's az in /usr/bin).
 */
function systemBinWithout(dirName: string, missing: string[]): string {
  const bin = path.join(tmp, dirName);
  fs.mkdirSync(bin);
  for (const dir of ['/usr/local/bin', '/usr/bin', '/bin']) {
    if (!fs.existsSync(dir)) continue;
    for (const name of fs.readdirSync(dir)) {
      const link = path.join(bin, name);
      if (name !== 'node' && !missing.includes(name) && !fs.existsSync(link)) fs.symlinkSync(path.join(dir, name), link);
    }
  }
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  return bin;
}
const sysBin = path.join(tmp, 'sysbin');
function env(extra: Record<string, string> = {}, withAz = true): NodeJS.ProcessEnv {
  // TMPDIR passes through: what the scripts leave in it is the test run's business (see global-teardown.js).
  const tmpdir = process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {};
  return { HOME: tmp, PATH: withAz ? `${fakeBin}:${sysBin}` : sysBin, SKR_BIN, FAKE_AZ_LOG: azLog, ...tmpdir, ...extra };
}
/** env() without SKR_BIN: the scripts find skr on PATH or fall back to this checkout's dist/. */
function envNoSkrBin(extra: Record<string, string> = {}, pathPrefix?: string): NodeJS.ProcessEnv {
  const e = env(extra);
  delete e.SKR_BIN;
  if (pathPrefix) e.PATH = `${pathPrefix}:${e.PATH}`;
  return e;
}
interface PolicyContainer { id: string; name: string; layers: string[]; allow_stdio_access?: boolean }
/** The `containers := [...]` and `fragments := [...]` rules of a Rego policy (the fake writes each on one line). */
function ruleOf<T>(rego: string, rule: string): T {
  const m = new RegExp(`^${rule} := (.*)$`, 'm').exec(rego);
  if (!m) throw new Error(`no ${rule} rule in:\n${rego}`);
  return JSON.parse(m[1]) as T;
}
function azCalls(): Array<{ cwd: string; argv: string[] }> {
  if (!fs.existsSync(azLog)) return [];
  return fs.readFileSync(azLog, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { cwd: string; argv: string[] });
}
const confcomCalls = () => azCalls().filter((c) => c.argv[0] === 'confcom');

/** A filled-in parameter file (the committed one has placeholders on purpose). */
const params = path.join(tmp, 'aci.parameters.json');
const IMAGE = 'myregistry.azurecr.io/skr-sidecar:0.1.0';

beforeAll(() => {
  systemBinWithout('sysbin', ['az', 'skr']);
  fs.mkdirSync(fakeBin);
  fs.writeFileSync(path.join(fakeBin, 'az'), FAKE_AZ, { mode: 0o755 });
  const p = readJson(path.join(REPO, 'arm', 'aci-arm-template.parameters.json')) as { parameters: Record<string, { value: unknown }> };
  p.parameters.image.value = IMAGE;
  p.parameters.identityResourceId.value = '/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/skr';
  p.parameters.maaEndpoint.value = 'sharedneu.neu.attest.azure.net';
  p.parameters.vaultEndpoint.value = 'https://myvault.vault.azure.net/';
  p.parameters.keyName.value = 'release-me';
  fs.writeFileSync(params, JSON.stringify(p));
});
beforeEach(() => fs.rmSync(azLog, { force: true }));
afterAll(async () => {
  await killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('gen-policy.sh', () => {
  const templateBefore = fs.readFileSync(path.join(REPO, 'arm', 'aci-arm-template.json'), 'utf8');

  it('injects the policy into a copy, fills the parameters, and pins its digest as x-ms-sevsnpvm-hostdata', async () => {
    const out = path.join(tmp, 'policy-plain');
    const r = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', out], { env: env() });
    expect(r.out).toMatch(/x-ms-sevsnpvm-hostdata: [0-9a-f]{64}/);
    expect(r.code).toBe(0);

    const calls = confcomCalls();
    expect(calls.map((c) => c.argv.slice(0, 2))).toEqual([['confcom', 'acipolicygen']]);
    expect(calls[0].argv.slice(2)).toEqual(['-a', path.join(out, 'aci-arm-template.json'), '-p', params]);

    const injected = readJson(path.join(out, 'aci-arm-template.json')) as { resources: Array<{ properties: { confidentialComputeProperties: { ccePolicy: string } } }> };
    const policy = injected.resources[0].properties.confidentialComputeProperties.ccePolicy;
    const rego = Buffer.from(policy, 'base64').toString();
    const containers = ruleOf<PolicyContainer[]>(rego, 'containers');
    expect(containers.find((c) => c.name === 'skr-sidecar-container')).toMatchObject({ id: IMAGE, allow_stdio_access: false });
    const digest = createHash('sha256').update(rego).digest('hex');

    const outParams = readJson(path.join(out, 'aci-arm-template.parameters.json')) as { parameters: Record<string, { value: string }> };
    expect(outParams.parameters.ccePolicy.value).toBe(policy);
    expect(outParams.parameters.image.value).toBe(IMAGE);

    const ik = readJson(path.join(out, 'importkeyconfig.json')) as {
      key: { kid: string; kty: string; authority: { endpoint: string }; akv: { endpoint: string; api_version: string } };
      claims: Array<Array<{ claim: string; equals: string }>>;
    };
    expect(ik.claims[0][0]).toEqual({ claim: 'x-ms-sevsnpvm-hostdata', equals: digest });
    expect(ik.claims[0].map((c) => c.claim)).toEqual(['x-ms-sevsnpvm-hostdata', 'x-ms-compliance-status', 'x-ms-sevsnpvm-is-debuggable', 'x-ms-sevsnpvm-vmpl']);
    expect(ik.key).toMatchObject({ kid: 'release-me', kty: 'RSA-HSM', authority: { endpoint: 'sharedneu.neu.attest.azure.net' }, akv: { endpoint: 'myvault.vault.azure.net', api_version: 'api-version=7.4' } });
    expect(fs.readFileSync(path.join(out, 'hostdata.txt'), 'utf8').trim()).toBe(digest);

    // The committed template keeps its ccePolicy parameter.
    expect(fs.readFileSync(path.join(REPO, 'arm', 'aci-arm-template.json'), 'utf8')).toBe(templateBefore);
  });

  it('includes fragments and debug mode when asked, and takes key settings from flags', async () => {
    const out = path.join(tmp, 'policy-fragments');
    const fragments = path.join(tmp, 'fragments.json');
    fs.writeFileSync(fragments, JSON.stringify({ fragments: [{ feed: 'myregistry.azurecr.io/skr-sidecar', includes: ['containers'], issuer: 'did:x509:0:sha256:abc::subject:CN:Test', minimum_svn: '2' }] }));
    const r = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', out, '--fragments-json', fragments, '--debug-mode', '--kid', 'other', '--kty', 'oct-HSM', '--akv-endpoint', 'myhsm.managedhsm.azure.net'], { env: env() });
    expect(r.code).toBe(0);
    expect(confcomCalls()[0].argv.slice(6)).toEqual(['--include-fragments', '--fragments-json', fragments, '--debug-mode']);
    const policy = String((readJson(path.join(out, 'aci-arm-template.parameters.json')) as { parameters: Record<string, { value: string }> }).parameters.ccePolicy.value);
    const rego = Buffer.from(policy, 'base64').toString();
    expect(ruleOf(rego, 'fragments')).toEqual([expect.objectContaining({ feed: 'myregistry.azurecr.io/skr-sidecar', issuer: 'did:x509:0:sha256:abc::subject:CN:Test', minimum_svn: '2' })]);
    expect(ruleOf<PolicyContainer[]>(rego, 'containers').find((c) => c.name === 'skr-sidecar-container')).toMatchObject({ allow_stdio_access: true });
    const ik = readJson(path.join(out, 'importkeyconfig.json')) as { key: Record<string, unknown>; claims: Array<Array<{ claim: string; equals: string }>> };
    expect(ik.key).toMatchObject({ kid: 'other', kty: 'oct-HSM', akv: { endpoint: 'myhsm.managedhsm.azure.net' } });
    expect(ik.claims[0][0].equals).toBe(createHash('sha256').update(rego).digest('hex'));
  });

  it('takes --kty EC-HSM, refuses an unknown kty, and refuses oct-HSM for a Key Vault (Managed HSM only)', async () => {
    const ec = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', path.join(tmp, 'policy-ec'), '--kty', 'EC-HSM', '--akv-endpoint', 'myvault.vault.azure.net'], { env: env() });
    expect(ec.code).toBe(0);
    expect((readJson(path.join(tmp, 'policy-ec', 'importkeyconfig.json')) as { key: Record<string, unknown> }).key).toMatchObject({ kty: 'EC-HSM', akv: { endpoint: 'myvault.vault.azure.net' } });
    const bad = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', path.join(tmp, 'policy-des'), '--kty', 'DES'], { env: env() });
    expect(bad.code).toBe(2);
    expect(bad.out).toMatch(/--kty "DES" is not RSA-HSM, EC-HSM or oct-HSM/);
    const octVault = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', path.join(tmp, 'policy-oct-vault'), '--kty', 'oct-HSM', '--akv-endpoint', 'myvault.vault.azure.net'], { env: env() });
    expect(octVault.code).toBe(1);
    expect(octVault.out).toMatch(/oct-HSM keys live in Managed HSM only/);
    expect(fs.existsSync(path.join(tmp, 'policy-oct-vault', 'importkeyconfig.json'))).toBe(false);
  });

  it('fails closed when acipolicygen\'s sha256 differs from skr policy digest', async () => {
    const out = path.join(tmp, 'policy-mismatch');
    const r = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', out], { env: env({ FAKE_AZ_BAD_HASH: '1' }) });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/digest mismatch: acipolicygen printed [0-9a-f]{64} but the injected policy hashes to [0-9a-f]{64}/);
    expect(fs.existsSync(path.join(out, 'importkeyconfig.json'))).toBe(false);
  });

  it('falls back to this checkout\'s build when SKR_BIN is unset and no skr is on PATH', async () => {
    // `command -v skr` finds lib.sh's own skr() function, so the fallback was never reached.
    const out = path.join(tmp, 'policy-no-skr-bin');
    const r = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', out], { env: envNoSkrBin() });
    expect(r.out).not.toMatch(/command not found/);
    expect(r.code).toBe(0);
    const rego = fs.readFileSync(path.join(out, 'ccepolicy.b64'), 'utf8');
    const digest = createHash('sha256').update(Buffer.from(rego, 'base64')).digest('hex');
    expect(fs.readFileSync(path.join(out, 'hostdata.txt'), 'utf8').trim()).toBe(digest);
  });

  it('prefers an skr on PATH when SKR_BIN is unset', async () => {
    const bin = path.join(tmp, 'skr-on-path');
    const log = path.join(tmp, 'skr-on-path.log');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'skr'), `#!/bin/sh\necho "$*" >> '${log}'\nexec '${process.execPath}' '${CLI}' "$@"\n`, { mode: 0o755 });
    const out = path.join(tmp, 'policy-skr-on-path');
    const r = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', out], { env: envNoSkrBin({}, bin) });
    expect(r.code).toBe(0);
    expect(fs.readFileSync(log, 'utf8')).toBe(`policy digest ${path.join(out, 'ccepolicy.b64')}\n`);
  });

  it('--tar passes confcom a map of the image tars with absolute paths (relative ones resolved where the script was run)', async () => {
    const work = path.join(tmp, 'tar-work');
    fs.mkdirSync(work);
    fs.writeFileSync(path.join(work, 'skr.oci.tar'), 'not really a tar');
    fs.writeFileSync(path.join(work, 'tarmap.json'), JSON.stringify({ [IMAGE]: 'skr.oci.tar' }));
    const out = path.join(tmp, 'policy-tar');
    const r = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--tar', 'tarmap.json', '--out', out], { env: env(), cwd: work });
    expect(r.out).toMatch(/acipolicygen sha256: [0-9a-f]{64}/);
    expect(r.code).toBe(0);
    expect(confcomCalls()[0].argv.slice(2)).toEqual(['-a', path.join(out, 'aci-arm-template.json'), '-p', params, '--tar', path.join(out, 'tarmap.json')]);
    expect(readJson(path.join(out, 'tarmap.json'))).toEqual({ [IMAGE]: path.join(work, 'skr.oci.tar') });
  });

  it('--tar refuses a map that is not an object of image → existing file, before calling az', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [[], /--tar wants a JSON object mapping each image to its tar file/],
      [{}, /--tar wants a JSON object/],
      [{ [IMAGE]: 7 }, /image "myregistry\.azurecr\.io\/skr-sidecar:0\.1\.0": the tar path is not a string/],
      [{ [IMAGE]: path.join(tmp, 'nope.tar') }, /image "myregistry\.azurecr\.io\/skr-sidecar:0\.1\.0": no such tar file ".*nope\.tar"/],
    ];
    for (const [map, message] of cases) {
      const f = path.join(tmp, 'bad-tarmap.json');
      fs.writeFileSync(f, JSON.stringify(map));
      const r = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--tar', f, '--out', path.join(tmp, 'policy-bad-tar')], { env: env() });
      expect([r.code, r.out]).toEqual([1, expect.stringMatching(message)]);
    }
    const noArg = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--tar', ''], { env: env() });
    expect([noArg.code, noArg.out]).toEqual([2, expect.stringContaining('--tar needs a mapping file')]);
    expect(confcomCalls()).toEqual([]);
  });

  it('refuses a policy whose layer entries are not sha256 hashes (confcom fed a docker-archive) and writes no release config', async () => {
    const out = path.join(tmp, 'policy-docker-archive');
    const r = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', out], { env: env({ FAKE_AZ_DOCKER_ARCHIVE: '1' }) });
    expect(r.code).toBe(1);
    expect(r.out).toContain('container "skr-sidecar-container" has a layer entry that is not a sha256 hash: "not able to parse in OCI format\\""');
    expect(r.out).toContain('podman save --format oci-archive -o IMAGE.tar IMAGE, and pass --tar');
    expect(r.out).toMatch(/refusing this policy \(see above\); not writing a release config/);
    expect(fs.existsSync(path.join(out, 'importkeyconfig.json'))).toBe(false);
    expect(fs.existsSync(path.join(out, 'hostdata.txt'))).toBe(false);
    expect(fs.existsSync(path.join(out, 'ccepolicy.b64'))).toBe(false);
    expect(fs.existsSync(path.join(out, 'aci-arm-template.json'))).toBe(false);
  });

  it('says what to install or fill in: az, the confcom extension, placeholders', async () => {
    const noAz = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', tmp], { env: env({}, false) });
    expect(noAz.code).toBe(1);
    expect(noAz.out).toMatch(/the Azure CLI \(az\) is not on PATH: install it .*az extension add --name confcom/);
    const noExt = await run('bash', [script('gen-policy.sh'), '--parameters', params, '--out', tmp], { env: env({ FAKE_AZ_NO_CONFCOM: '1' }) });
    expect(noExt.code).toBe(1);
    expect(noExt.out).toMatch(/confcom extension is not installed: az extension add --name confcom/);
    const placeholders = await run('bash', [script('gen-policy.sh'), '--out', tmp], { env: env() });
    expect(placeholders.code).toBe(1);
    expect(placeholders.out).toMatch(/fill in the placeholders first: image, identityResourceId, maaEndpoint, vaultEndpoint, keyName/);
    expect(confcomCalls()).toEqual([]);
  });
});

describe('gen-fragment.sh and gen-import.sh', () => {
  const key = path.join(tmp, 'key.pem');
  const chain = path.join(tmp, 'chain.pem');
  beforeAll(() => {
    fs.writeFileSync(key, '-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n');
    fs.writeFileSync(chain, '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');
  });

  it('signs and uploads a fragment for the image, from a config with the image filled in', async () => {
    const out = path.join(tmp, 'frag');
    const r = await run('bash', [script('gen-fragment.sh'), '--image', IMAGE, '--key', key, '--chain', chain, '--svn', '3', '--upload', '--out', out], { env: env() });
    expect(r.code).toBe(0);
    const [call] = confcomCalls();
    expect(call.cwd).toBe(out);
    expect(call.argv).toEqual(['confcom', 'acifragmentgen', '-i', 'fragment_config.json', '--svn', '3', '--namespace', 'skr_sidecar', '--key', key, '--chain', chain, '--feed', 'myregistry.azurecr.io/skr-sidecar', '--upload-fragment', '--image-target', IMAGE]);
    const cfg = readJson(path.join(out, 'fragment_config.json')) as { containers: Array<{ properties: { image: string; command: string[] } }> };
    expect(cfg.containers[0].properties).toMatchObject({ image: IMAGE, command: ['/skr.sh'] });
    expect(ruleOf(fs.readFileSync(path.join(out, 'skr_sidecar.rego'), 'utf8'), 'containers')).toEqual([expect.objectContaining({ id: IMAGE })]);
    expect(fs.existsSync(path.join(out, 'skr_sidecar.rego.cose'))).toBe(true);
  });

  it('without --upload still signs the feed into the fragment, so gen-import.sh --fragment takes it', async () => {
    const out = path.join(tmp, 'frag-local');
    const r = await run('bash', [script('gen-fragment.sh'), '--image', `${IMAGE.replace('myregistry.azurecr.io', 'myregistry.azurecr.io:5000')}`, '--key', key, '--chain', chain, '--out', out], { env: env() });
    expect(r.code).toBe(0);
    expect(confcomCalls()[0].argv.slice(-2)).toEqual(['--feed', 'myregistry.azurecr.io:5000/skr-sidecar']);
    const fragments = path.join(tmp, 'frag-local-import', 'fragments.json');
    const imp = await run('bash', [script('gen-import.sh'), '--fragment', path.join(out, 'skr_sidecar.rego.cose'), '--minimum-svn', '1', '--fragments-json', fragments], { env: env() });
    expect(imp.code).toBe(0);
    expect(confcomCalls()[1].argv).toEqual(['confcom', 'acifragmentgen', '--generate-import', '--fragment-path', path.join(out, 'skr_sidecar.rego.cose'), '--fragments-json', fragments, '--minimum-svn', '1']);
    expect((readJson(fragments) as { fragments: unknown[] }).fragments).toEqual([expect.objectContaining({ feed: 'myregistry.azurecr.io:5000/skr-sidecar', minimum_svn: '1' })]);
  });

  it('gen-import.sh refuses a fragment signed without a feed, and takes --image or --fragment, not both', async () => {
    const cose = path.join(tmp, 'no-feed.rego.cose');
    fs.writeFileSync(cose, Buffer.concat([Buffer.from([0xd2, 0x84]), Buffer.from(JSON.stringify({ feed: '', iss: 'did:x509:0:sha256:abc::subject:CN:Test', payload: '' }))]));
    const r = await run('bash', [script('gen-import.sh'), '--fragment', cose, '--fragments-json', path.join(tmp, 'no-feed', 'fragments.json')], { env: env() });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/import statement lacks feed \(the fragment was signed without a feed: regenerate it with gen-fragment\.sh\)/);
    const both = await run('bash', [script('gen-import.sh'), '--fragment', cose, '--image', IMAGE], { env: env() });
    expect([both.code, both.out]).toEqual([2, expect.stringContaining('give --image or --fragment, not both')]);
  });

  it('gen-fragment.sh --tar passes the map, and refuses a fragment whose layers are not sha256 hashes', async () => {
    const tarFile = path.join(tmp, 'frag.oci.tar');
    fs.writeFileSync(tarFile, 'not really a tar');
    const map = path.join(tmp, 'frag-tarmap.json');
    fs.writeFileSync(map, JSON.stringify({ [IMAGE]: tarFile }));
    const out = path.join(tmp, 'frag-tar');
    const ok = await run('bash', [script('gen-fragment.sh'), '--image', IMAGE, '--key', key, '--chain', chain, '--tar', map, '--out', out], { env: env() });
    expect(ok.code).toBe(0);
    expect(confcomCalls()[0].argv.slice(-4)).toEqual(['--feed', 'myregistry.azurecr.io/skr-sidecar', '--tar', path.join(out, 'tarmap.json')]);
    const bad = await run('bash', [script('gen-fragment.sh'), '--image', IMAGE, '--key', key, '--chain', chain, '--tar', map, '--out', path.join(tmp, 'frag-docker-archive')], { env: env({ FAKE_AZ_DOCKER_ARCHIVE: '1' }) });
    expect(bad.code).toBe(1);
    expect(bad.out).toContain('has a layer entry that is not a sha256 hash: "not able to parse in OCI format\\""');
    expect(bad.out).toContain('refusing this fragment (see above)');
    expect(fs.existsSync(path.join(tmp, 'frag-docker-archive', 'skr_sidecar.rego.cose'))).toBe(false);
  });

  it('names a missing key or chain file and a bad namespace before calling az', async () => {
    const noKey = await run('bash', [script('gen-fragment.sh'), '--image', IMAGE, '--key', path.join(tmp, 'nope.pem'), '--chain', chain], { env: env() });
    expect(noKey.code).toBe(1);
    expect(noKey.out).toMatch(/--key .*nope\.pem: no such readable file \(the PEM private key that signs the fragment\)/);
    const noChain = await run('bash', [script('gen-fragment.sh'), '--image', IMAGE, '--key', key], { env: env() });
    expect(noChain.code).toBe(2);
    expect(noChain.out).toMatch(/--chain is required/);
    const ns = await run('bash', [script('gen-fragment.sh'), '--image', IMAGE, '--key', key, '--chain', chain, '--namespace', 'Bad-NS'], { env: env() });
    expect(ns.code).toBe(2);
    expect(ns.out).toMatch(/Rego package name/);
    expect(confcomCalls()).toEqual([]);
  });

  it('writes the import statement into fragments.json', async () => {
    const fragments = path.join(tmp, 'import', 'fragments.json');
    const r = await run('bash', [script('gen-import.sh'), '--image', IMAGE, '--minimum-svn', '3', '--fragments-json', fragments], { env: env() });
    expect(r.code).toBe(0);
    expect(confcomCalls()[0].argv).toEqual(['confcom', 'acifragmentgen', '--generate-import', '--image', IMAGE, '--fragments-json', fragments, '--minimum-svn', '3']);
    expect((readJson(fragments) as { fragments: unknown[] }).fragments).toEqual([
      expect.objectContaining({ feed: 'myregistry.azurecr.io/skr-sidecar', minimum_svn: '3' }),
    ]);
  });
});

describe('fragment_config.json', () => {
  const cfg = readJson(path.join(REPO, 'fragments', 'fragment_config.json')) as {
    containers: Array<{ name: string; properties: { command: string[]; environmentVariables: Array<{ name: string; value: string; regex?: boolean }> } }>;
  };
  const aci = readJson(path.join(REPO, 'arm', 'aci-arm-template.json')) as {
    parameters: Record<string, { defaultValue?: unknown; allowedValues?: string[] }>;
    resources: Array<{ properties: { containers: Array<{ name: string; properties: { command: string[]; environmentVariables: Array<{ name: string; value: string }> } }> } }>;
  };

  it('describes the sidecar container exactly as the ARM template runs it', () => {
    const [frag] = cfg.containers;
    const sidecar = aci.resources[0].properties.containers[0];
    expect(frag.name).toBe(sidecar.name);
    expect(frag.properties.command).toEqual(sidecar.properties.command);
    expect(frag.properties.environmentVariables.map((e) => e.name).sort()).toEqual(sidecar.properties.environmentVariables.map((e) => e.name).sort());
    // Every value the template can deploy (defaults, allowed values, literals) matches the fragment's rule.
    for (const e of sidecar.properties.environmentVariables) {
      const rule = frag.properties.environmentVariables.find((r) => r.name === e.name)!;
      const m = /^\[parameters\('([^']+)'\)\]$/.exec(e.value);
      const values = m ? (aci.parameters[m[1]].allowedValues ?? [String(aci.parameters[m[1]].defaultValue)]) : [e.value];
      for (const v of values) {
        const ok = rule.regex ? new RegExp(`^(?:${rule.value})$`).test(v) : rule.value === v;
        expect([e.name, v, ok]).toEqual([e.name, v, true]);
      }
    }
  });
});

describe('npm run confcom:test (scripts/confcom-test.sh) in npm and CI', () => {
  const text = (f: string) => fs.readFileSync(path.join(REPO, f), 'utf8');

  it('is an npm script that .ci/run runs after image:test, tolerating only exit 3 (cannot run containers)', () => {
    expect((JSON.parse(text('package.json')) as { scripts: Record<string, string> }).scripts['confcom:test']).toBe('bash scripts/confcom-test.sh');
    const ci = text('.ci/run');
    const at = (command: string) => ci.search(new RegExp(`^${command} `, 'm'));
    expect(at('npm run image:test')).toBeGreaterThan(0);
    expect(at('npm run confcom:test')).toBeGreaterThan(at('npm run image:test'));
    expect(ci).toMatch(/case "\$confcom_rc" in\s+0\) ;;\s+3\) echo [^\n]*;;\s+\*\) exit "\$confcom_rc" ;;/);
  });

  it('.ci/run installs every Debian package the confcom kit needs, so the kit finds them (CI has no stdin)', () => {
    const kit = path.join(REPO, '..', 'shared', 'tools', 'confcom', 'install.sh');
    if (!fs.existsSync(kit)) {
      console.warn(`SKIPPED: no confcom kit at ${kit}`);
      return;
    }
    const list = (src: string) => (/^APT_PACKAGES=\(([^)]*)\)/m.exec(src)?.[1] ?? '').split(/\s+/).filter(Boolean);
    const needed = list(fs.readFileSync(kit, 'utf8'));
    expect(needed).toContain('azure-cli');
    expect(list(text('.ci/run'))).toEqual(expect.arrayContaining(needed));
  });

  it('on a machine without podman or docker: exit 3 and one SKIPPED line, before installing anything', async () => {
    const bin = systemBinWithout('sysbin-no-engine', ['az', 'skr', 'podman', 'docker']);
    const r = await run('bash', [path.join(REPO, 'scripts', 'confcom-test.sh')], { env: { HOME: tmp, PATH: bin, SKR_CONFCOM_KIT: path.join(tmp, 'no-kit') } });
    expect(r.code).toBe(3);
    expect(r.out).toBe('confcom:test: SKIPPED, this machine cannot run containers: neither podman nor a docker engine is available (CI installs podman with apt)\n');
  });
});
