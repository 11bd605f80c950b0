/**
 * arm/: templates are valid JSON, every parameter/variable is declared and used, resource types use
 * api-versions Azure serves for them, and the ACI group agrees with docker/ (image paths, env names,
 * port) and with what az confcom can resolve.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { itIsWellFormedTemplate, loadJson as load, KEY_READER_ROLE, RELEASE_USER_ROLE, strings, type Json } from './arm-template';
import { REPO } from './helpers';

const text = (rel: string) => fs.readFileSync(path.join(REPO, rel), 'utf8');

/**
 * Known-good api-versions (learn.microsoft.com/azure/templates): containerGroups 2023-05-01 is the
 * first GA version with sku Confidential + confidentialComputeProperties.ccePolicy; vaults 2023-07-01
 * has enableRbacAuthorization; managedHSMs 2023-07-01; roleAssignments 2022-04-01 (GA, with
 * principalType/description).
 */
const API_VERSIONS: Record<string, string> = {
  'Microsoft.ContainerInstance/containerGroups': '2023-05-01',
  'Microsoft.KeyVault/vaults': '2023-07-01',
  'Microsoft.KeyVault/managedHSMs': '2023-07-01',
  'Microsoft.ManagedIdentity/userAssignedIdentities': '2023-01-31',
  'Microsoft.Authorization/roleAssignments': '2022-04-01',
};
const ACR_PULL_ROLE = '7f951dca-4771-4ea1-a7ea-c0d8b1bf30d8'; // AcrPull (built-in)

const TEMPLATES = ['arm/aci-arm-template.json', 'arm/keyvault-arm-template.json'];

describe.each(TEMPLATES)('%s', (rel) => {
  itIsWellFormedTemplate(rel, API_VERSIONS);
});

describe('aci-arm-template.json', () => {
  const t = load('arm/aci-arm-template.json');
  const group = (t.resources as Json[])[0];
  const props = group.properties as Json;
  const containers = (props.containers as Json[]).map((c) => ({ name: String(c.name), ...(c.properties as Json) })) as Array<Json & { name: string }>;
  const envOf = (c: Json) => Object.fromEntries((c.environmentVariables as Array<{ name: string; value: string }>).map((e) => [e.name, e.value]));
  const dockerfile = text('docker/Dockerfile');

  it('is a confidential group with a ccePolicy parameter and a user-assigned identity parameter', () => {
    expect(group.type).toBe('Microsoft.ContainerInstance/containerGroups');
    expect(props.sku).toBe('Confidential');
    expect(props.confidentialComputeProperties).toEqual({ ccePolicy: "[parameters('ccePolicy')]" });
    expect(group.identity).toEqual({ type: 'UserAssigned', userAssignedIdentities: { "[parameters('identityResourceId')]": {} } });
  });

  it('pulls a private image with the group\'s user-assigned identity, and public images without credentials', () => {
    const p = t.parameters as Record<string, Json>;
    expect(p.registryServer).toMatchObject({ type: 'string', defaultValue: '' });
    // Empty registryServer: no credentials at all; otherwise one entry, the server with the identity
    // the group already carries (no username/password anywhere in the template).
    expect(props.imageRegistryCredentials).toBe(
      "[if(empty(parameters('registryServer')), createArray(), createArray(createObject('server', parameters('registryServer'), 'identity', parameters('identityResourceId'))))]",
    );
    expect(Object.keys(group.identity as Json)).toContain('userAssignedIdentities');
    expect(Object.keys((group.identity as Json).userAssignedIdentities as Json)).toEqual(["[parameters('identityResourceId')]"]);
    expect(JSON.stringify(t)).not.toMatch(/"(username|password)"/);
  });

  it('runs the sidecar and the reference example\'s three test clients, all from the image parameter', () => {
    expect(containers.map((c) => [c.name, (c.command as string[])[0]])).toEqual([
      ['skr-sidecar-container', '/skr.sh'],
      ['test-skr-client-container', '/tests/skr/skr_client.sh'],
      ['test-attest-client-container', '/tests/skr/attest_client.sh'],
      ['test-attest-maa-client-container', '/tests/skr/attest_client.sh'],
    ]);
    for (const c of containers) expect(c.image).toBe("[parameters('image')]");
    expect(envOf(containers[1])).toEqual({ SkrClientMAAEndpoint: "[parameters('maaEndpoint')]", SkrClientAKVEndpoint: "[parameters('vaultEndpoint')]", SkrClientKID: "[parameters('keyName')]" });
    expect(envOf(containers[2])).toEqual({ AttestClientRuntimeData: "[parameters('runtimeData')]" });
    expect(envOf(containers[3])).toEqual({ AttestClientMAAEndpoint: "[parameters('maaEndpoint')]", AttestClientRuntimeData: "[parameters('runtimeData')]" });
  });

  it('commands are the paths the Dockerfile installs the docker/ scripts at', () => {
    expect(dockerfile).toMatch(/^COPY docker\/skr\.sh \/skr\.sh$/m);
    const testsCopy = /^COPY ((?:docker\/tests\/\S+ )+)\/tests\/skr\/$/m.exec(dockerfile);
    const installed = (testsCopy?.[1] ?? '').trim().split(' ').map((p) => `/tests/skr/${path.basename(p)}`);
    for (const c of containers) {
      const cmd = (c.command as string[])[0];
      expect([cmd, cmd === '/skr.sh' || installed.includes(cmd)]).toEqual([cmd, true]);
    }
    expect(dockerfile).toMatch(/^CMD \["\/skr\.sh"\]$/m);
  });

  it('sets only env vars the container\'s script reads', () => {
    const scriptFor = (cmd: string) => (cmd === '/skr.sh' ? text('docker/skr.sh') : text(`docker/tests/${path.basename(cmd)}`));
    for (const c of containers) {
      const script = scriptFor((c.command as string[])[0]);
      for (const name of Object.keys(envOf(c))) expect([c.name, name, script.includes(`\${${name}`)]).toEqual([c.name, name, true]);
    }
    expect(Object.keys(envOf(containers[0])).sort()).toEqual(['LogFile', 'LogLevel', 'Port', 'ServerType', 'SkrSideCarArgs']);
  });

  it('serverType chooses the HTTP API (default) or the gRPC key provider, the values skr.sh takes', () => {
    const p = (t.parameters as Record<string, Json>).serverType;
    expect(p).toMatchObject({ type: 'string', defaultValue: 'http', allowedValues: ['http', 'grpc'] });
    expect(envOf(containers[0]).ServerType).toBe("[parameters('serverType')]");
    expect(text('docker/skr.sh')).toMatch(/^\s*http\|grpc\) ;;$/m);
  });

  it('the sidecar port agrees everywhere: Port env, container port, the clients\' default address, EXPOSE', () => {
    const port = Number(envOf(containers[0]).Port);
    expect(port).toBe(8080);
    expect(containers[0].ports).toEqual([{ port, protocol: 'TCP' }]);
    expect(text('docker/tests/client-lib.sh')).toContain(`\${SKR_SIDECAR_URL:-http://localhost:${port}}`);
    expect(dockerfile).toMatch(new RegExp(`^EXPOSE ${port}$`, 'm'));
    // The sidecar binds 127.0.0.1 only: a public IP would expose nothing, so the group has none.
    expect(props.ipAddress).toBeUndefined();
  });

  it('uses only literals or whole [parameters()] references in containers (all az confcom resolves)', () => {
    for (const s of strings(props.containers)) {
      if (s.startsWith('[')) expect(s).toMatch(/^\[parameters\('[A-Za-z]+'\)\]$/);
    }
  });

  it('defaults decode as the sidecar expects (base64 JSON args, base64 runtime data)', () => {
    const p = t.parameters as Record<string, Json>;
    expect(JSON.parse(Buffer.from(String(p.skrSideCarArgs.defaultValue), 'base64').toString())).toEqual({});
    expect(() => JSON.parse(Buffer.from(String(p.runtimeData.defaultValue), 'base64').toString())).not.toThrow();
  });
});

describe('keyvault-arm-template.json', () => {
  const t = load('arm/keyvault-arm-template.json');
  const res = t.resources as Json[];
  const byType = (type: string) => res.filter((r) => r.type === type);

  it('creates a Premium vault with RBAC authorization, or a Managed HSM, by a condition parameter', () => {
    const [vault] = byType('Microsoft.KeyVault/vaults');
    const vp = vault.properties as Json;
    expect(vp.sku).toEqual({ family: 'A', name: 'premium' });
    expect(vp.enableRbacAuthorization).toBe(true);
    expect(vault.condition).toBe("[not(variables('isHsm'))]");
    const [hsm] = byType('Microsoft.KeyVault/managedHSMs');
    expect(hsm.condition).toBe("[variables('isHsm')]");
    expect((hsm.properties as Json).initialAdminObjectIds).toBe("[parameters('hsmAdministratorObjectIds')]");
    expect((t.variables as Json).isHsm).toBe("[equals(parameters('vaultType'), 'ManagedHSM')]");
    // Key Vault refuses enablePurgeProtection=false: off must be null.
    expect(vp.enablePurgeProtection).toBe("[if(parameters('enablePurgeProtection'), true(), null())]");
  });

  it('grants the user-assigned identity Key Vault Crypto Service Release User on the vault', () => {
    expect(byType('Microsoft.ManagedIdentity/userAssignedIdentities')).toHaveLength(1);
    const release = byType('Microsoft.Authorization/roleAssignments').find((r) => String((r.properties as Json).roleDefinitionId).includes('releaseUserRoleId'));
    expect((t.variables as Json).releaseUserRoleId).toBe(RELEASE_USER_ROLE);
    expect(release?.scope).toBe("[format('Microsoft.KeyVault/vaults/{0}', parameters('vaultName'))]");
    expect(release?.properties).toMatchObject({
      principalId: "[reference(variables('identityId'), '2023-01-31').principalId]",
      principalType: 'ServicePrincipal',
    });
    expect(release?.dependsOn).toEqual(["[variables('vaultId')]", "[variables('identityId')]"]);
  });

  it('grants the identity Key Vault Reader on the vault, so a refused release can be explained (the key\'s release policy is read)', () => {
    expect((t.variables as Json).keyReaderRoleId).toBe(KEY_READER_ROLE);
    const reader = byType('Microsoft.Authorization/roleAssignments').find((r) => String((r.properties as Json).roleDefinitionId).includes("variables('keyReaderRoleId')"));
    expect(reader?.scope).toBe("[format('Microsoft.KeyVault/vaults/{0}', parameters('vaultName'))]");
    expect(reader?.properties).toMatchObject({ principalId: "[reference(variables('identityId'), '2023-01-31').principalId]", principalType: 'ServicePrincipal' });
    expect(reader?.name).toBe("[guid(variables('vaultId'), variables('identityId'), variables('keyReaderRoleId'))]");
  });

  it('optionally grants the identity AcrPull on the registry holding the image', () => {
    const p = t.parameters as Record<string, Json>;
    expect(p.acrName).toMatchObject({ type: 'string', defaultValue: '' });
    expect((t.variables as Json).acrPullRoleId).toBe(ACR_PULL_ROLE);
    const pull = byType('Microsoft.Authorization/roleAssignments').find((r) => String((r.properties as Json).roleDefinitionId).includes('acrPullRoleId'));
    expect(pull?.condition).toBe("[not(empty(parameters('acrName')))]");
    expect(pull?.scope).toBe("[format('Microsoft.ContainerRegistry/registries/{0}', parameters('acrName'))]");
    expect(pull?.properties).toMatchObject({
      principalId: "[reference(variables('identityId'), '2023-01-31').principalId]",
      principalType: 'ServicePrincipal',
    });
    expect(pull?.dependsOn).toEqual(["[variables('identityId')]"]);
    // Deterministic and distinct from the vault assignments, so a redeploy is idempotent.
    expect(String(pull?.name)).toContain("variables('acrPullRoleId')");
  });

  it('outputs what the ACI template needs', () => {
    expect(Object.keys(t.outputs as Json).sort()).toEqual(['identityClientId', 'identityPrincipalId', 'identityResourceId', 'vaultEndpoint']);
  });
});
