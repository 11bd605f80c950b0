/**
 * arm/cvm/: the confidential VM deployment. The template is well formed (every parameter/variable
 * declared and used, known api-versions, a parameter file with placeholders), describes what
 * docs/deploy-cvm.md promises (SEV-SNP CVM with vTPM and secure boot, SSH key only and only from one
 * address, Premium vault with purge protection and RBAC, the release role for the VM's identity), its
 * customData is the cloud-init file verbatim with every token filled in, the rendered cloud-init parses
 * and configures a sidecar the project's own config loader accepts, its systemd unit is well formed,
 * and the example import config builds a release policy that grants a CVM token's nested claims and
 * refuses the same claims at the top level.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseImportKeyConfig, policyFromConfig } from '../../src/akv/import-key';
import { buildReleasePolicy, decodeReleasePolicy, encodeReleasePolicy, evaluateReleasePolicy, failedConditions } from '../../src/akv/policy';
import { explainPolicy } from '../../src/akv/policy-explain';
import { loadServerConfig } from '../../src/server/config';
import { STRING_FUNCTIONS, evaluate, type ArmContext } from './arm-expr';
import { itIsWellFormedTemplate, KEY_READER_ROLE, RELEASE_USER_ROLE, type Json } from './arm-template';
import { REPO } from './helpers';
import { parseYamlSubset, YamlSubsetError } from './yaml-subset';

const DIR = path.join(REPO, 'arm', 'cvm');
const text = (name: string) => fs.readFileSync(path.join(DIR, name), 'utf8');
const load = (name: string) => JSON.parse(text(name)) as Json;

const API_VERSIONS: Record<string, string> = {
  'Microsoft.Compute/virtualMachines': '2024-03-01',
  'Microsoft.Network/networkSecurityGroups': '2023-11-01',
  'Microsoft.Network/virtualNetworks': '2023-11-01',
  'Microsoft.Network/publicIPAddresses': '2023-11-01',
  'Microsoft.Network/networkInterfaces': '2023-11-01',
  'Microsoft.KeyVault/vaults': '2023-07-01',
  'Microsoft.ManagedIdentity/userAssignedIdentities': '2023-01-31',
  'Microsoft.Authorization/roleAssignments': '2022-04-01',
};

const t = load('cvm-arm-template.json');
const params = t.parameters as Record<string, Json>;
const vars = t.variables as Record<string, unknown>;
const resources = t.resources as Json[];
const byType = (type: string) => resources.filter((r) => r.type === type);
const vm = byType('Microsoft.Compute/virtualMachines')[0];
const vmProps = vm.properties as Json;
const osProfile = vmProps.osProfile as Json;
const cloudInitText = text('cloud-init.yaml');

/** Deployment-time values for rendering: what docs/deploy-cvm.md tells the user to pass. */
const SAMPLE = {
  sidecarPackageUrl: 'https://skrpkg.blob.core.windows.net/pkg/skr-sidecar-0.1.0.tgz?sp=r&se=2026-12-01T00:00:00Z&sv=2022-11-02&sr=b&sig=AbC%2Bd%3D',
  sidecarPackageSha256: 'A1'.repeat(32),
  maaEndpoint: 'sharedeus.eus.attest.azure.net',
  vaultName: 'myskrvault',
  keyName: 'skr-cvm-key',
  clientId: '3f2504e0-4f89-11d3-9a0c-0305e82c3301',
};

function armContext(): ArmContext {
  const p: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) if ('defaultValue' in v) p[k] = v.defaultValue;
  Object.assign(p, {
    sidecarPackageUrl: SAMPLE.sidecarPackageUrl,
    sidecarPackageSha256: SAMPLE.sidecarPackageSha256,
    maaEndpoint: SAMPLE.maaEndpoint,
    vaultName: SAMPLE.vaultName,
    keyName: SAMPLE.keyName,
    location: 'eastus',
  });
  return {
    parameters: p,
    variables: vars,
    functions: {
      ...STRING_FUNCTIONS,
      resourceId: (type, ...names) => `/subscriptions/s/resourceGroups/rg/providers/${String(type)}/${names.map(String).join('/')}`,
      environment: () => ({ suffixes: { keyvaultDns: '.vault.azure.net' } }),
      reference: (id, apiVersion) => {
        if (String(id).includes('Microsoft.ManagedIdentity/userAssignedIdentities/') && apiVersion === '2023-01-31') {
          return { clientId: SAMPLE.clientId, principalId: 'p' };
        }
        throw new Error(`unexpected reference(${String(id)}, ${String(apiVersion)})`);
      },
    },
  };
}

/** The cloud-init the VM receives: customData evaluated with the sample parameters, base64-decoded. */
function renderedCloudInit(): string {
  const customData = evaluate(String(osProfile.customData), armContext());
  return Buffer.from(String(customData), 'base64').toString('utf8');
}

interface WriteFile {
  path: string;
  owner: string;
  permissions: string;
  content: string;
}
function writeFiles(doc: unknown): Map<string, WriteFile> {
  const files = (doc as { write_files: WriteFile[] }).write_files;
  return new Map(files.map((f) => [f.path, f]));
}
function envFile(content: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of content.split('\n').filter(Boolean)) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new Error(`not KEY=value: ${line}`);
    env[m[1]] = m[2];
  }
  return env;
}

describe('cvm-arm-template.json: a well-formed deployment template', () => {
  itIsWellFormedTemplate('arm/cvm/cvm-arm-template.json', API_VERSIONS);
});

describe('cvm-arm-template.json: the deployment the documents describe', () => {
  it('is an AMD SEV-SNP confidential VM with vTPM and secure boot, guest state (and optionally the disk) encrypted', () => {
    expect(vmProps.securityProfile).toEqual({ securityType: 'ConfidentialVM', uefiSettings: { secureBootEnabled: true, vTpmEnabled: true } });
    const storage = vmProps.storageProfile as { imageReference: Json; osDisk: { managedDisk: { securityProfile: Json } } };
    expect(storage.imageReference).toEqual({ publisher: 'Canonical', offer: 'ubuntu-24_04-lts', sku: 'cvm', version: 'latest' });
    expect(storage.osDisk.managedDisk.securityProfile).toEqual({ securityEncryptionType: "[parameters('osDiskSecurityEncryptionType')]" });
    expect(params.osDiskSecurityEncryptionType.allowedValues).toEqual(['VMGuestStateOnly', 'DiskWithVMGuestState']);
    expect((vmProps.hardwareProfile as Json).vmSize).toBe("[parameters('vmSize')]");
    expect(params.vmSize.defaultValue).toBe('Standard_DC2as_v5');
    // AMD SEV-SNP (a: DCasv5/DCadsv5/ECasv5) and Intel TDX (e: DCesv5/DCedsv5/ECesv5/ECedsv5), same security type.
    const sizes = params.vmSize.allowedValues as string[];
    for (const size of sizes) expect(size).toMatch(/^Standard_[DE]C\d+[ae]d?s_v5$/);
    expect(sizes).toEqual(expect.arrayContaining(['Standard_DC2as_v5', 'Standard_DC2es_v5', 'Standard_EC4eds_v5']));
  });

  it('logs in with an SSH key only', () => {
    expect(osProfile.adminPassword).toBeUndefined();
    expect(osProfile.linuxConfiguration).toEqual({
      disablePasswordAuthentication: true,
      ssh: { publicKeys: [{ path: "[format('/home/{0}/.ssh/authorized_keys', parameters('adminUsername'))]", keyData: "[parameters('sshPublicKey')]" }] },
    });
    expect(params.sshPublicKey.defaultValue).toBeUndefined();
  });

  it('opens SSH only, and only to the deployer\'s address, on both the NIC and the subnet', () => {
    const [nsg] = byType('Microsoft.Network/networkSecurityGroups');
    const rules = ((nsg.properties as Json).securityRules as Json[]).map((r) => r.properties as Json);
    const allowIn = rules.filter((r) => r.direction === 'Inbound' && r.access === 'Allow');
    expect(allowIn).toEqual([expect.objectContaining({ protocol: 'Tcp', destinationPortRange: '22', sourceAddressPrefix: "[parameters('sshSourceAddress')]" })]);
    expect(params.sshSourceAddress.defaultValue).toBeUndefined();
    const nsgRef = { id: "[resourceId('Microsoft.Network/networkSecurityGroups', variables('nsgName'))]" };
    const [nic] = byType('Microsoft.Network/networkInterfaces');
    expect((nic.properties as Json).networkSecurityGroup).toEqual(nsgRef);
    const [vnet] = byType('Microsoft.Network/virtualNetworks');
    for (const s of (vnet.properties as { subnets: { properties: Json }[] }).subnets) expect(s.properties.networkSecurityGroup).toEqual(nsgRef);
    expect((vmProps.networkProfile as { networkInterfaces: Json[] }).networkInterfaces).toHaveLength(1);
  });

  it('creates a Premium vault with purge protection, soft delete and Azure RBAC', () => {
    const [vault] = byType('Microsoft.KeyVault/vaults');
    expect(vault.condition).toBeUndefined();
    expect(vault.properties).toMatchObject({
      sku: { family: 'A', name: 'premium' },
      enableRbacAuthorization: true,
      enableSoftDelete: true,
      enablePurgeProtection: true,
      softDeleteRetentionInDays: "[parameters('softDeleteRetentionInDays')]",
    });
  });

  it('gives the user-assigned identity Key Vault Crypto Service Release User on the vault, and attaches it to the VM', () => {
    expect(byType('Microsoft.ManagedIdentity/userAssignedIdentities')).toHaveLength(1);
    expect(vars.releaseUserRoleId).toBe(RELEASE_USER_ROLE);
    const release = byType('Microsoft.Authorization/roleAssignments').find((r) => String((r.properties as Json).roleDefinitionId).includes("variables('releaseUserRoleId')"));
    expect(release?.condition).toBeUndefined();
    expect(release?.scope).toBe("[format('Microsoft.KeyVault/vaults/{0}', parameters('vaultName'))]");
    expect(release?.properties).toMatchObject({ principalId: "[reference(variables('identityId'), '2023-01-31').principalId]", principalType: 'ServicePrincipal' });
    expect(vm.identity).toEqual({ type: 'UserAssigned', userAssignedIdentities: { "[variables('identityId')]": {} } });
    // The VM comes up only once its identity may release: the first boot can already do it.
    expect(vm.dependsOn).toContain(`[extensionResourceId(variables('vaultId'), 'Microsoft.Authorization/roleAssignments', ${String(release?.name).slice(1, -1)})]`);
  });

  it('grants the identity Key Vault Reader on the vault, so a refused release can be explained (the key\'s release policy is read)', () => {
    expect(vars.keyReaderRoleId).toBe(KEY_READER_ROLE);
    const reader = byType('Microsoft.Authorization/roleAssignments').find((r) => String((r.properties as Json).roleDefinitionId).includes("variables('keyReaderRoleId')"));
    expect(reader?.scope).toBe("[format('Microsoft.KeyVault/vaults/{0}', parameters('vaultName'))]");
    expect(reader?.properties).toMatchObject({ principalId: "[reference(variables('identityId'), '2023-01-31').principalId]", principalType: 'ServicePrincipal' });
    expect(reader?.name).toBe("[guid(variables('vaultId'), variables('identityId'), variables('keyReaderRoleId'))]");
  });

  it('outputs what docs/deploy-cvm.md uses', () => {
    expect(Object.keys(t.outputs as Json).sort()).toEqual(['identityClientId', 'identityPrincipalId', 'keyName', 'maaEndpoint', 'publicIpAddress', 'sshCommand', 'vaultEndpoint']);
    const ctx = armContext();
    expect(evaluate(String((t.outputs as Record<string, Json>).vaultEndpoint.value), ctx)).toBe('myskrvault.vault.azure.net');
  });
});

describe('customData: arm/cvm/cloud-init.yaml, embedded verbatim and filled in at deployment', () => {
  it('the template\'s cloudInit variable is the YAML file byte for byte, and build-template.mjs --check agrees', () => {
    expect(vars.cloudInit).toBe(cloudInitText);
    const r = spawnSync(process.execPath, [path.join(DIR, 'build-template.mjs'), '--check'], { encoding: 'utf8' });
    expect([r.status, r.stderr]).toEqual([0, '']);
  });

  it('build-template.mjs --check fails on a stale template, and a rebuild brings it up to date', () => {
    // A copy in a temp dir: the script works on the files beside it.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-arm-cvm-'));
    try {
      for (const f of ['build-template.mjs', 'cloud-init.yaml']) fs.copyFileSync(path.join(DIR, f), path.join(dir, f));
      const stale = JSON.parse(text('cvm-arm-template.json')) as Json;
      (stale.variables as Json).cloudInit = `${cloudInitText}# edited\n`;
      fs.writeFileSync(path.join(dir, 'cvm-arm-template.json'), `${JSON.stringify(stale, null, 2)}\n`);
      const check = () => spawnSync(process.execPath, [path.join(dir, 'build-template.mjs'), '--check'], { encoding: 'utf8' });
      const r = check();
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('out of date');
      expect(spawnSync(process.execPath, [path.join(dir, 'build-template.mjs')], { encoding: 'utf8' }).status).toBe(0);
      expect(check().status).toBe(0);
      expect(fs.readFileSync(path.join(dir, 'cvm-arm-template.json'), 'utf8')).toBe(text('cvm-arm-template.json'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('customData is base64 of the cloudInit variable with exactly the tokens the YAML holds replaced', () => {
    const expr = String(osProfile.customData);
    expect(expr).toMatch(/^\[base64\(replace\(/);
    expect(expr).toContain("variables('cloudInit')");
    const inYaml = new Set(cloudInitText.match(/__SKR_[A-Z0-9_]+__/g));
    const replaced = new Set([...expr.matchAll(/'(__SKR_[A-Z0-9_]+__)'/g)].map((m) => m[1]));
    expect([...replaced].sort()).toEqual([...inYaml].sort());
    const rendered = renderedCloudInit();
    expect(rendered).not.toMatch(/__SKR_/);
    expect(rendered.split('\n')[0]).toBe('#cloud-config');
  });

  it('the rendered cloud-init parses, and installs the package it was given, checked by its hash', () => {
    const doc = parseYamlSubset(renderedCloudInit()) as Json;
    expect(Object.keys(doc).sort()).toEqual(['package_update', 'packages', 'runcmd', 'write_files']);
    expect(doc.packages).toEqual(expect.arrayContaining(['tpm-udev', 'curl', 'xz-utils']));
    const files = writeFiles(doc);
    for (const f of files.values()) {
      expect(f.path).toMatch(/^\//);
      expect(f.permissions).toMatch(/^0[0-7]{3}$/);
      expect(f.owner).toBe('root:root');
    }
    const install = envFile(files.get('/etc/skr-sidecar/install.env')!.content);
    expect(install).toEqual({ SKR_PACKAGE_URL: SAMPLE.sidecarPackageUrl, SKR_PACKAGE_SHA256: SAMPLE.sidecarPackageSha256.toLowerCase(), NODE_MAJOR: '24' });
    // It may hold a SAS URL: root only.
    expect(files.get('/etc/skr-sidecar/install.env')!.permissions).toBe('0600');
    expect(doc.runcmd).toEqual(['/usr/local/sbin/skr-install']);
    expect(files.get('/usr/local/sbin/skr-install')!.permissions).toBe('0755');
  });

  it('the sidecar environment it writes is accepted by the sidecar\'s own config loader and pins this deployment', () => {
    const files = writeFiles(parseYamlSubset(renderedCloudInit()));
    const env = envFile(files.get('/etc/skr-sidecar/sidecar.env')!.content);
    const cfg = loadServerConfig({}, env);
    expect(cfg.host).toBe('127.0.0.1');
    expect(cfg.port).toBe(8080);
    expect(cfg.args.identity).toEqual({ client_id: SAMPLE.clientId });
    expect(cfg.allowedMaa).toEqual([SAMPLE.maaEndpoint]);
    expect(cfg.allowedAkv).toEqual(['myskrvault.vault.azure.net']);
    expect(cfg.allowedKids).toEqual([SAMPLE.keyName]);
    expect(cfg.simulate).toBe(false);
  });

  it('the install script is valid bash that fails closed and installs the binary the unit starts', () => {
    const files = writeFiles(parseYamlSubset(cloudInitText));
    const script = files.get('/usr/local/sbin/skr-install')!.content;
    expect(script.split('\n').slice(0, 1)).toEqual(['#!/bin/bash']);
    expect(script).toMatch(/^set -euo pipefail$/m);
    const r = spawnSync('bash', ['-n'], { input: script, encoding: 'utf8' });
    expect([r.status, r.stderr]).toEqual([0, '']);
    // Both downloads are verified before use.
    expect(script).toMatch(/sha256sum --check --strict --quiet - \|\| fail "the package at SKR_PACKAGE_URL does not match/);
    expect(script).toMatch(/SHASUMS256\.txt \| sha256sum --check --strict --quiet -\) \|\| fail/);
    expect(script).toMatch(/^PREFIX=\$\{SKR_PREFIX:-\/usr\/local\}$/m);
    expect(script).toContain('[[ -x "$PREFIX/bin/skr" ]] || fail');
    expect(script).toContain('[[ -c "$TPM" ]] || fail');
  });
});

/**
 * The install script run for real, against fakes on PATH (curl serving fixtures, systemctl, udevadm,
 * useradd, ...), a fixture Node.js tarball and package, and temp paths through its SKR_* overrides.
 */
describe('skr-install (the script cloud-init runs), with fakes', () => {
  let root = '';
  let fix = '';
  let bin = '';
  let script = '';
  const nodeTar = 'node-v24.1.0-linux-x64.tar.xz';
  const pkgBytes = Buffer.from('not really a tarball, the fake npm does not care');
  const pkgSha = createHash('sha256').update(pkgBytes).digest('hex');
  const PKG_URL = 'https://pkg.example/skr-sidecar-0.1.0.tgz?sp=r&se=2026-12-01&sig=AbC%2Bd%3D';
  let run = 0;

  const write = (p: string, content: string | Buffer, mode = 0o644) => {
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content, { mode });
  };

  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cvm-install-'));
    fix = path.join(root, 'fixtures');
    bin = path.join(root, 'bin');
    script = path.join(root, 'skr-install');
    fs.mkdirSync(fix);
    write(script, writeFiles(parseYamlSubset(cloudInitText)).get('/usr/local/sbin/skr-install')!.content, 0o755);
    // Fixture Node.js: a tarball laid out like nodejs.org's, with fake node and npm.
    const tree = path.join(root, 'tree', 'node-v24.1.0-linux-x64');
    write(path.join(tree, 'bin', 'node'), '#!/bin/sh\ncase "$1" in -p) echo 24 ;; --version) echo v24.1.0 ;; esac\n', 0o755);
    write(path.join(tree, 'bin', 'npm'), '#!/bin/sh\necho "$@" >> "$FAKE_LOG/npm.log"\nprintf \'#!/bin/sh\\necho 0.1.0\\n\' > "$SKR_PREFIX/bin/skr"\nchmod 755 "$SKR_PREFIX/bin/skr"\n', 0o755);
    for (const f of ['README.md', 'CHANGELOG.md', 'LICENSE', 'lib/node_modules/npm/README.md']) write(path.join(tree, f), f);
    const tar = spawnSync('tar', ['-cJf', path.join(fix, nodeTar), '-C', path.join(root, 'tree'), 'node-v24.1.0-linux-x64']);
    if (tar.status !== 0) throw new Error(`tar: ${String(tar.stderr)}`);
    write(path.join(fix, 'pkg.tgz'), pkgBytes);
    const curl = [
      '#!/bin/bash',
      'echo "$@" >> "$FAKE_LOG/curl.log"',
      'out=""; url="${@: -1}"',
      'while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done',
      'case "$url" in',
      '  https://nodejs.org/dist/latest-v24.x/SHASUMS256.txt) cp "$FIX/SHASUMS256.txt" "$out" ;;',
      '  https://nodejs.org/dist/latest-v24.x/node-v*) cp "$FIX/${url##*/}" "$out" ;;',
      '  https://pkg.example/*) cp "$FIX/pkg.tgz" "$out" ;;',
      '  http://127.0.0.1:8080/status) exit 0 ;;',
      '  *) exit 22 ;;',
      'esac',
    ].join('\n');
    write(path.join(bin, 'curl'), `${curl}\n`, 0o755);
    const logged = (name: string, body: string) => write(path.join(bin, name), `#!/bin/sh\necho "${name} $*" >> "$FAKE_LOG/commands.log"\n${body}\n`, 0o755);
    logged('uname', 'echo x86_64');
    logged('getent', 'exit 0');
    logged('id', 'exit 1');
    logged('useradd', 'exit 0');
    logged('udevadm', 'exit 0');
    logged('stat', 'echo tss');
    logged('systemctl', 'exit 0');
  });

  afterAll(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  function install(opts: { url?: string; sha?: string; shasums?: string; tpm?: string; omit?: string } = {}) {
    const dir = path.join(root, `run-${++run}`);
    const prefix = path.join(dir, 'prefix');
    const logs = path.join(dir, 'logs');
    fs.mkdirSync(path.join(prefix, 'bin'), { recursive: true });
    fs.mkdirSync(logs);
    const tarSha = createHash('sha256').update(fs.readFileSync(path.join(fix, nodeTar))).digest('hex');
    write(path.join(fix, 'SHASUMS256.txt'), opts.shasums ?? `${'0'.repeat(64)}  node-v24.1.0-linux-arm64.tar.xz\n${tarSha}  ${nodeTar}\n`);
    const env = [`SKR_PACKAGE_URL=${opts.url ?? PKG_URL}`, `SKR_PACKAGE_SHA256=${opts.sha ?? pkgSha}`, 'NODE_MAJOR=24']
      .filter((l) => !opts.omit || !l.startsWith(`${opts.omit}=`));
    write(path.join(dir, 'install.env'), `${env.join('\n')}\n`, 0o600);
    write(path.join(dir, 'sidecar.env'), 'Port=8080\n');
    const r = spawnSync('bash', [script], {
      encoding: 'utf8',
      env: {
        PATH: `${bin}:${process.env.PATH}`,
        TMPDIR: dir,
        FIX: fix,
        FAKE_LOG: logs,
        SKR_PREFIX: prefix,
        SKR_INSTALL_ENV: path.join(dir, 'install.env'),
        SKR_SIDECAR_ENV: path.join(dir, 'sidecar.env'),
        SKR_TPM_DEVICE: opts.tpm ?? '/dev/null',
      },
    });
    const log = (name: string) => (fs.existsSync(path.join(logs, name)) ? fs.readFileSync(path.join(logs, name), 'utf8') : '');
    return { status: r.status, out: r.stdout, err: r.stderr, prefix, dir, log };
  }

  it('installs the checked Node.js tarball and package, creates the user and starts the service', () => {
    const r = install();
    expect([r.status, r.err]).toEqual([0, '']);
    expect(r.out).toContain('installed Node.js v24.1.0');
    expect(r.out).toContain('installed skr 0.1.0');
    expect(r.out).toContain('skr-sidecar answers on 127.0.0.1:8080');
    // The tarball's top-level files stay out of the prefix; everything else lands in it.
    expect(fs.existsSync(path.join(r.prefix, 'bin', 'node'))).toBe(true);
    expect(fs.existsSync(path.join(r.prefix, 'README.md'))).toBe(false);
    expect(fs.existsSync(path.join(r.prefix, 'LICENSE'))).toBe(false);
    expect(fs.existsSync(path.join(r.prefix, 'lib', 'node_modules', 'npm', 'README.md'))).toBe(true);
    expect(r.log('npm.log')).toMatch(/^install --global --omit=dev --ignore-scripts --no-fund --no-audit --no-update-notifier \/\S+\/skr-sidecar\.tgz\n$/);
    const commands = r.log('commands.log');
    expect(commands).toMatch(/^useradd --system --user-group --no-create-home --home-dir \/nonexistent --shell \/usr\/sbin\/nologin skr$/m);
    expect(commands).toMatch(/^udevadm trigger --action=change --subsystem-match=tpmrm$/m);
    expect(commands.split('\n').filter((l) => l.startsWith('systemctl'))).toEqual([
      'systemctl daemon-reload', 'systemctl enable skr-sidecar.service', 'systemctl restart skr-sidecar.service',
    ]);
    // Downloads are https only (redirects included), and the SAS URL arrives intact.
    const downloads = r.log('curl.log').split('\n').filter((l) => l.includes(' -o '));
    expect(downloads).toHaveLength(3);
    for (const d of downloads) expect(d).toContain('--proto =https');
    expect(downloads[2].endsWith(` ${PKG_URL}`)).toBe(true);
    // Its temp dir is gone.
    expect(fs.readdirSync(r.dir).sort()).toEqual(['install.env', 'logs', 'prefix', 'sidecar.env']);
  });

  it('refuses a package that does not match its sha256, before npm runs', () => {
    const r = install({ sha: 'a'.repeat(64) });
    expect(r.status).toBe(1);
    expect(r.err).toContain('the package at SKR_PACKAGE_URL does not match SKR_PACKAGE_SHA256');
    expect(r.log('npm.log')).toBe('');
    expect(r.log('commands.log')).not.toMatch(/systemctl/);
  });

  it('refuses a Node.js tarball that does not match SHASUMS256.txt, and extracts nothing', () => {
    const r = install({ shasums: `${'b'.repeat(64)}  ${nodeTar}\n` });
    expect(r.status).toBe(1);
    expect(r.err).toContain(`${nodeTar} does not match https://nodejs.org/dist/latest-v24.x/SHASUMS256.txt`);
    expect(fs.readdirSync(path.join(r.prefix, 'bin'))).toEqual([]);
  });

  it.each([
    ['an http URL', { url: 'http://pkg.example/skr-sidecar-0.1.0.tgz' }, 'SKR_PACKAGE_URL must be an https URL'],
    ['the placeholder URL', { url: '<https URL of skr-sidecar-0.1.0.tgz from npm pack>' }, 'SKR_PACKAGE_URL must be an https URL'],
    ['a short hash', { sha: 'abc' }, 'SKR_PACKAGE_SHA256 must be 64 lower-case hex digits'],
    ['a missing hash', { omit: 'SKR_PACKAGE_SHA256' }, 'has no SKR_PACKAGE_SHA256'],
    ['no vTPM', { tpm: '/nonexistent/tpmrm0' }, '/nonexistent/tpmrm0 is missing: the VM has no vTPM'],
  ])('fails closed on %s, before downloading anything', (_what, opts, message) => {
    const r = install(opts);
    expect(r.status).toBe(1);
    expect(r.err).toContain(message);
    expect(r.log('curl.log')).toBe('');
  });
});

/** A systemd unit file: sections in order, KEY=VALUE lines, comments; no continuation lines. */
function parseUnit(src: string): { sections: string[]; get: (s: string, k: string) => string[] } {
  const sections: string[] = [];
  const entries = new Map<string, string[]>();
  let current = '';
  src.split('\n').forEach((line, n) => {
    if (line === '' || /^[#;]/.test(line)) return;
    if (line.endsWith('\\')) throw new Error(`line ${n + 1}: continuation lines are not used here`);
    const sec = /^\[([A-Za-z]+)\]$/.exec(line);
    if (sec) {
      if (sections.includes(sec[1])) throw new Error(`line ${n + 1}: section [${sec[1]}] twice`);
      sections.push((current = sec[1]));
      return;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv || !current) throw new Error(`line ${n + 1}: not KEY=VALUE inside a section: ${line}`);
    const key = `${current}.${kv[1]}`;
    entries.set(key, [...(entries.get(key) ?? []), kv[2]]);
  });
  return { sections, get: (s, k) => entries.get(`${s}.${k}`) ?? [] };
}

const KNOWN_KEYS: Record<string, string[]> = {
  Unit: ['Description', 'Documentation', 'Wants', 'Requires', 'After', 'Before'],
  Service: [
    'Type', 'User', 'Group', 'SupplementaryGroups', 'EnvironmentFile', 'Environment', 'ExecStart', 'Restart', 'RestartSec', 'UMask',
    'DevicePolicy', 'DeviceAllow', 'NoNewPrivileges', 'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'ProtectProc', 'ProtectKernelTunables',
    'ProtectKernelModules', 'ProtectKernelLogs', 'ProtectControlGroups', 'ProtectClock', 'ProtectHostname', 'RestrictAddressFamilies',
    'RestrictNamespaces', 'RestrictRealtime', 'RestrictSUIDSGID', 'LockPersonality', 'RemoveIPC', 'KeyringMode', 'CapabilityBoundingSet',
    'AmbientCapabilities', 'SystemCallArchitectures', 'SystemCallFilter', 'SystemCallErrorNumber',
  ],
  Install: ['WantedBy'],
};
const BOOLEAN_KEYS = ['NoNewPrivileges', 'ProtectHome', 'PrivateTmp', 'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectKernelLogs',
  'ProtectControlGroups', 'ProtectClock', 'ProtectHostname', 'RestrictNamespaces', 'RestrictRealtime', 'RestrictSUIDSGID', 'LockPersonality', 'RemoveIPC'];

describe('skr-sidecar.service (written by cloud-init)', () => {
  const files = writeFiles(parseYamlSubset(cloudInitText));
  const unitText = files.get('/etc/systemd/system/skr-sidecar.service')!.content;
  const unit = parseUnit(unitText);
  const one = (s: string, k: string) => {
    const v = unit.get(s, k);
    expect([`${s}.${k}`, v.length]).toEqual([`${s}.${k}`, 1]);
    return v[0];
  };

  it('has the [Unit], [Service] and [Install] sections with known keys only, each set once, booleans spelled yes', () => {
    expect(unit.sections).toEqual(['Unit', 'Service', 'Install']);
    for (const line of unitText.split('\n')) {
      const m = /^([A-Za-z]+)=/.exec(line);
      if (!m) continue;
      const section = unit.sections.find((s) => KNOWN_KEYS[s].includes(m[1]));
      expect([m[1], section !== undefined]).toEqual([m[1], true]);
    }
    for (const s of unit.sections) for (const k of KNOWN_KEYS[s]) expect([k, unit.get(s, k).length <= 1]).toEqual([k, true]);
    for (const k of BOOLEAN_KEYS) expect([k, one('Service', k)]).toEqual([k, 'yes']);
    expect(one('Install', 'WantedBy')).toBe('multi-user.target');
  });

  it('runs `skr serve --platform azure-cvm` from an absolute path, configured by the environment file cloud-init writes', () => {
    const exec = one('Service', 'ExecStart');
    expect(exec).toBe('/usr/local/bin/skr serve --platform azure-cvm');
    expect(exec.split(' ')[0]).toMatch(/^\/[^\s]+$/);
    expect(files.has(one('Service', 'EnvironmentFile'))).toBe(true);
    // No listen-address flag exists: the sidecar binds 127.0.0.1, whatever the port.
    expect(exec).not.toMatch(/--(host|bind|listen)/);
  });

  it('runs as a dedicated user with the TPM device and nothing else', () => {
    expect(one('Service', 'User')).toBe('skr');
    expect(one('Service', 'Group')).toBe('skr');
    expect(one('Service', 'SupplementaryGroups')).toBe('tss');
    expect(one('Service', 'DevicePolicy')).toBe('closed');
    expect(unit.get('Service', 'DeviceAllow')).toEqual(['/dev/tpmrm0 rw']);
    // PrivateDevices=yes would hide /dev/tpmrm0 from the service.
    expect(unit.get('Service', 'PrivateDevices')).toEqual([]);
    expect(one('Service', 'ProtectSystem')).toBe('strict');
    expect(one('Service', 'CapabilityBoundingSet')).toBe('');
    expect(one('Service', 'AmbientCapabilities')).toBe('');
    expect(one('Service', 'Restart')).toBe('on-failure');
  });

  it('creates the user it runs as in the install script, not in the image', () => {
    const script = files.get('/usr/local/sbin/skr-install')!.content;
    expect(script).toMatch(/useradd --system --user-group .* skr$/m);
    expect(script).toContain('systemctl enable skr-sidecar.service');
  });
});

describe('the YAML subset checker refuses what it does not understand', () => {
  it.each([
    ['a tab', 'a:\n\tb: 1\n'],
    ['trailing spaces', 'a: b \n'],
    ['a flow sequence', 'a: [b, c]\n'],
    ['an anchor', 'a: &x b\n'],
    ['a folded scalar', 'a: >\n  b\n'],
    ['a YAML 1.1 boolean', 'a: yes\n'],
    ['an octal-looking number', 'a: 0644\n'],
    ['an inline comment', 'a: b # c\n'],
    ['a duplicate key', 'a: 1\na: 2\n'],
    ['a key without a value', 'a:\nb: 1\n'],
    ['bad indentation', 'a:\n  b: 1\n   c: 2\n'],
  ])('%s', (_what, src) => {
    expect(() => parseYamlSubset(src)).toThrow(YamlSubsetError);
  });

  it('parses the constructs the cloud-init file uses', () => {
    expect(parseYamlSubset("#c\nk: v\nn: 3\nb: true\nq: '0600'\nl:\n  - x\n  - p: /a\n    c: |\n      one\n\n      two\n")).toEqual({
      k: 'v', n: 3, b: true, q: '0600', l: ['x', { p: '/a', c: 'one\n\ntwo\n' }],
    });
  });
});

describe('arm/cvm/importkeyconfig.json: the CVM release policy', () => {
  /** Filled in as docs/deploy-cvm.md's jq step does: the template itself holds placeholders. */
  const filled = (): string => {
    const c = JSON.parse(text('importkeyconfig.json')) as { key: { kid: string; akv: { endpoint: string; bearer_token: string }; authority: { endpoint: string } } };
    c.key.akv.endpoint = 'myskrvault.vault.azure.net';
    c.key.akv.bearer_token = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln';
    return JSON.stringify(c);
  };
  const cfg = parseImportKeyConfig(filled());

  it('is a template: unfilled, import-key refuses it naming a placeholder', () => {
    expect(() => parseImportKeyConfig(text('importkeyconfig.json'))).toThrow(/importkey config key\.akv\.\w+: is still a placeholder/);
  });
  const policy = policyFromConfig(cfg);
  const iss = 'https://sharedeus.eus.attest.azure.net';
  /** A guest-attestation token's claims, shaped as CVM-PROTOCOL.md §6. */
  const cvmClaims = (tee: Json = {}): Json => ({
    iss,
    'x-ms-ver': '1.0',
    'x-ms-attestation-type': 'azurevm',
    secureboot: true,
    'x-ms-isolation-tee': {
      'x-ms-attestation-type': 'sevsnpvm',
      'x-ms-compliance-status': 'azure-compliant-cvm',
      'x-ms-sevsnpvm-vmpl': 0,
      'x-ms-sevsnpvm-is-debuggable': false,
      ...tee,
    },
    'x-ms-runtime': { keys: [{ kid: 'TpmEphemeralEncryptionKey', kty: 'RSA', key_ops: ['encrypt'], e: 'AQAB', n: 'AQAB' }] },
  });

  it('is an RSA-HSM key (what a Premium vault holds) named as the template\'s keyName default, bound to the regional shared MAA', () => {
    expect(cfg.key.kty).toBe('RSA-HSM');
    expect(cfg.key.kid).toBe(params.keyName.defaultValue);
    expect(policy.anyOf.map((a) => a.authority)).toEqual([iss, iss]);
  });

  it('builds a valid policy whose conditions are the nested x-ms-isolation-tee claims', () => {
    expect(decodeReleasePolicy(encodeReleasePolicy(policy))).toEqual(policy);
    // Either CPU vendor, as Azure's default CVM policy and `--policy-template azure-cvm`.
    expect(policy.anyOf.map((a) => a.allOf)).toEqual(['sevsnpvm', 'tdxvm'].map((t) => [
      { claim: 'x-ms-isolation-tee.x-ms-attestation-type', equals: t },
      { claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ]));
  });

  it('grants a CVM guest token from that MAA, SEV-SNP or TDX', () => {
    expect(evaluateReleasePolicy(policy, cvmClaims()).granted).toBe(true);
    expect(evaluateReleasePolicy(policy, cvmClaims({ 'x-ms-attestation-type': 'tdxvm' })).granted).toBe(true);
  });

  it('refuses the same claims at the top level only (the platform-path token shape)', () => {
    const top: Json = { iss, 'x-ms-attestation-type': 'sevsnpvm', 'x-ms-compliance-status': 'azure-compliant-cvm', 'x-ms-sevsnpvm-vmpl': 0 };
    const ev = evaluateReleasePolicy(policy, top);
    expect(ev.granted).toBe(false);
    expect(failedConditions(ev).map((c) => [c.claim, c.present])).toEqual([
      ['x-ms-isolation-tee.x-ms-attestation-type', false],
      ['x-ms-isolation-tee.x-ms-compliance-status', false],
      ['x-ms-isolation-tee.x-ms-attestation-type', false],
      ['x-ms-isolation-tee.x-ms-compliance-status', false],
    ]);
  });

  it('the mistake the troubleshooting table describes: the same claims written at the top level refuse a CVM token, and skr policy explain names the nested claim', () => {
    const topLevel = buildReleasePolicy({ authority: cfg.key.authority.endpoint, anyOfGroups: [cfg.claims[0].map((c) => ({ ...c, claim: c.claim.replace(/^x-ms-isolation-tee\./, '') }))] });
    expect(evaluateReleasePolicy(topLevel, cvmClaims()).granted).toBe(false);
    const explained = explainPolicy(topLevel, cvmClaims());
    expect(explained.granted).toBe(false);
    expect(explained.hints.join('\n')).toContain('use "x-ms-isolation-tee.x-ms-compliance-status"');
  });

  it('refuses a VM MAA does not call compliant, and a token from another region\'s MAA', () => {
    expect(evaluateReleasePolicy(policy, cvmClaims({ 'x-ms-compliance-status': 'not-compliant', 'x-ms-sevsnpvm-is-debuggable': true })).granted).toBe(false);
    const other = evaluateReleasePolicy(policy, { ...cvmClaims(), iss: 'https://sharedweu.weu.attest.azure.net' });
    expect(other.granted).toBe(false);
    expect(other.authorities[0].issuerMatches).toBe(false);
  });
});

describe('docs/deploy-cvm.md agrees with the template', () => {
  const doc = fs.readFileSync(path.join(REPO, 'docs', 'deploy-cvm.md'), 'utf8');

  it('its az deployment command passes every required parameter, and only declared ones', () => {
    const lines = doc.split('\n');
    const start = lines.findIndex((l) => l.startsWith('az deployment group create'));
    expect(start).toBeGreaterThanOrEqual(0);
    let end = start;
    while (lines[end].endsWith('\\')) end++;
    const command = lines.slice(start, end + 1).join('\n');
    expect(command).toContain('--template-file arm/cvm/cvm-arm-template.json');
    expect(command).toContain('--parameters @arm/cvm/cvm-arm-template.parameters.json');
    const passed = [...command.matchAll(/(?:^|\s)([a-z][A-Za-z0-9]*)=/g)].map((m) => m[1]);
    for (const name of passed) expect([name, name in params]).toEqual([name, true]);
    const required = Object.entries(params).filter(([, p]) => !('defaultValue' in p)).map(([k]) => k);
    for (const name of required) expect([name, passed.includes(name)]).toEqual([name, true]);
  });

  it('uses outputs the template has, and names files that exist', () => {
    const outputs = Object.keys(t.outputs as Json);
    const used = [...doc.matchAll(/properties\.outputs\.([A-Za-z]+)\.value/g)].map((m) => m[1]);
    expect(used.length).toBeGreaterThan(0);
    for (const o of used) expect([o, outputs.includes(o)]).toEqual([o, true]);
    const files = new Set(doc.match(/arm\/cvm\/[A-Za-z0-9._-]+/g));
    for (const f of files) expect([f, fs.existsSync(path.join(REPO, f))]).toEqual([f, true]);
    expect(doc).toContain('/usr/local/sbin/skr-install');
    expect(cloudInitText).toContain('- path: /usr/local/sbin/skr-install');
  });
});

describe('the package the VM installs (npm pack)', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { files: string[]; bin: Record<string, string>; scripts: Record<string, string> };
  const packed = (p: string) => pkg.files.some((f) => p === f || p.startsWith(`${f.replace(/\/$/, '')}/`));

  it('contains the CLI the unit starts and the script its install hook runs', () => {
    expect(pkg.bin.skr).toBe('dist/cli/main.js');
    expect(packed(pkg.bin.skr)).toBe(true);
    const hook = /^node (\S+)$/.exec(pkg.scripts.install)?.[1];
    expect(hook).toBeDefined();
    expect([hook, packed(String(hook))]).toEqual([hook, true]);
  });
});
