/** The one configuration module: every setting of the serve path is read there, and only there. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_LIMITS, loadServerConfig } from '../../src/server/config';

describe('loadServerConfig reads every setting into one object', () => {
  it('release tuning, workload identity and the security-context variables', () => {
    const cfg = loadServerConfig(
      {},
      {
        SKR_WRAPPING_KEY_POOL_SIZE: '0',
        SKR_MAA_TOKEN_REUSE: 'false',
        SKR_MAA_TOKEN_REUSE_MARGIN_SECONDS: '60',
        AZURE_FEDERATED_TOKEN_FILE: '/var/run/secrets/azure/tokens/azure-identity-token',
        AZURE_CLIENT_ID: 'client',
        AZURE_TENANT_ID: 'tenant',
        UVM_SECURITY_CONTEXT_DIR: '/ctx',
        UVM_REFERENCE_INFO: 'cmVm',
        UNRELATED: 'x',
      },
    );
    expect(cfg.release).toEqual({ wrappingKeyPoolSize: 0, maaTokenReuse: false, maaTokenReuseMarginSeconds: 60 });
    expect(cfg.workloadIdentity).toEqual({ tokenFilePath: '/var/run/secrets/azure/tokens/azure-identity-token', clientId: 'client', tenantId: 'tenant' });
    expect(cfg.securityContextEnv).toEqual({ UVM_SECURITY_CONTEXT_DIR: '/ctx', UVM_REFERENCE_INFO: 'cmVm' });
    expect(cfg.limits.maxBodyBytes).toBe(1024 * 1024);
    expect(cfg.limits.vaultAttemptTimeoutMs).toBe(DEFAULT_LIMITS.vaultAttemptTimeoutMs);
  });

  it('without those variables: defaults, managed identity, no security-context overrides', () => {
    const cfg = loadServerConfig({}, {});
    expect(cfg.release).toEqual({});
    expect(cfg.workloadIdentity).toBeUndefined();
    expect(cfg.securityContextEnv).toEqual({});
  });

  it('a bad release setting fails at start-up, naming the variable', () => {
    expect(() => loadServerConfig({}, { SKR_WRAPPING_KEY_POOL_SIZE: 'four' })).toThrow(/SKR_WRAPPING_KEY_POOL_SIZE/);
  });
});

describe('no other module of src/ reads the process environment', () => {
  // Emulators and the CLI's own commands (state directory of `skr local`) are not the serve path.
  const ALLOWED = [/^server\/config\.ts$/, /^emulators\//, /^cli\/commands\/local\.ts$/];

  function files(dir: string): string[] {
    return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
  }

  it('process.env appears only in config.ts, the emulators and the local command', () => {
    const src = path.resolve(__dirname, '..', '..', 'src');
    const readers = files(src)
      .map((f) => path.relative(src, f).split(path.sep).join('/'))
      .filter((rel) => /process\.env\b/.test(fs.readFileSync(path.join(src, rel), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')))
      .filter((rel) => !ALLOWED.some((re) => re.test(rel)));
    expect(readers).toEqual([]);
  });
});
