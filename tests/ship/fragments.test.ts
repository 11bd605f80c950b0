/**
 * fragments/ scripts with a fake `az` on PATH that records its arguments and behaves like the
 * confcom extension: acipolicygen injects a ccePolicy into the template and prints its sha256,
 * acifragmentgen writes NS.rego (+ .cose when signing), --generate-import appends to fragments.json.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO, SKR_BIN, killAll, readJson, run } from './helpers';

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
  const rego = ['package policy', 'api_version := "0.10.0"',
    ...g.properties.containers.map((c) => 'container ' + c.name + ' ' + resolve(c.properties.image)),
    ...frags.map((f) => 'fragment ' + f.feed + ' ' + f.issuer + ' ' + f.minimum_svn),
    'allow_stdio_access := ' + has('--debug-mode')].join('\\n');
  const cc = g.properties.confidentialComputeProperties;
  if (cc.ccePolicy) {
    process.stdout.write('Do you want to overwrite the CCE Policy currently in container group "x" in the ARM Template? (y/n) ');
    const answer = fs.readFileSync(0, 'utf8').trim();
    if (answer !== 'y') process.exit(0);
  }
  cc.ccePolicy = Buffer.from(rego).toString('base64');
  fs.writeFileSync(file, JSON.stringify(t, null, 4));
  const digest = crypto.createHash('sha256').update(rego).digest('hex');
  console.log(process.env.FAKE_AZ_BAD_HASH ? digest.replace(/^./, (c) => (c === '0' ? '1' : '0')) : digest);
} else if (cmd === 'confcom acifragmentgen' && has('--generate-import')) {
  const f = opt('--fragments-json');
  const cur = fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : {};
  cur.fragments = [...(cur.fragments || []), { feed: opt('--image').replace(/:[^/:]+$/, ''), includes: ['containers', 'fragments'],
    issuer: 'did:x509:0:sha256:0NWnhcxjUwmwLCd7A-PubQRq08ig3icQxpW5d2f4Rbc::subject:CN:Contoso', minimum_svn: opt('--minimum-svn') }];
  fs.writeFileSync(f, JSON.stringify(cur, null, 4));
} else if (cmd === 'confcom acifragmentgen') {
  const cfg = JSON.parse(fs.readFileSync(opt('-i'), 'utf8'));
  const ns = opt('--namespace');
  const text = 'package ' + ns + '\\nsvn := "' + opt('--svn') + '"\\n' + cfg.containers.map((c) => 'container ' + c.properties.image).join('\\n') + '\\n';
  fs.writeFileSync(ns + '.rego', text);
  if (opt('--key')) fs.writeFileSync(ns + '.rego.cose', Buffer.concat([Buffer.from([0xd2, 0x84]), Buffer.from(text)]));
} else {
  console.error('fake az: unsupported ' + argv.join(' '));
  process.exit(2);
}
`;

const nodeDir = path.dirname(process.execPath);
const basePath = `${nodeDir}:/usr/bin:/bin`;
function env(extra: Record<string, string> = {}, withAz = true): NodeJS.ProcessEnv {
  // TMPDIR passes through: what the scripts leave in it is the test run's business (see global-teardown.js).
  const tmpdir = process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {};
  return { HOME: tmp, PATH: withAz ? `${fakeBin}:${basePath}` : basePath, SKR_BIN, FAKE_AZ_LOG: azLog, ...tmpdir, ...extra };
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
    expect(rego).toContain(`container skr-sidecar-container ${IMAGE}`);
    expect(rego).toContain('allow_stdio_access := false');
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
    expect(rego).toContain('fragment myregistry.azurecr.io/skr-sidecar did:x509:0:sha256:abc::subject:CN:Test 2');
    expect(rego).toContain('allow_stdio_access := true');
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
    expect(call.argv).toEqual(['confcom', 'acifragmentgen', '-i', 'fragment_config.json', '--svn', '3', '--namespace', 'skr_sidecar', '--key', key, '--chain', chain, '--upload-fragment', '--image-target', IMAGE]);
    const cfg = readJson(path.join(out, 'fragment_config.json')) as { containers: Array<{ properties: { image: string; command: string[] } }> };
    expect(cfg.containers[0].properties).toMatchObject({ image: IMAGE, command: ['/skr.sh'] });
    expect(fs.readFileSync(path.join(out, 'skr_sidecar.rego'), 'utf8')).toContain(`container ${IMAGE}`);
    expect(fs.existsSync(path.join(out, 'skr_sidecar.rego.cose'))).toBe(true);
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
