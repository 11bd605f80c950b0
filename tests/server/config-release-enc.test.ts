/** SKR_RELEASE_ENC: the `enc` every vault release sends (issue 14). */
import { ConfigError } from '../../src/common/errors';
import { loadServerConfig, parseReleaseEnc } from '../../src/server/config';

describe('SKR_RELEASE_ENC', () => {
  it('defaults to RSA_AES_KEY_WRAP_256', () => {
    expect(loadServerConfig({ port: '0' }, {}).releaseEnc).toBe('RSA_AES_KEY_WRAP_256');
    expect(parseReleaseEnc('  ')).toBe('RSA_AES_KEY_WRAP_256');
  });
  it.each(['CKM_RSA_AES_KEY_WRAP', 'RSA_AES_KEY_WRAP_256', 'RSA_AES_KEY_WRAP_384'])('takes %s', (enc) => {
    expect(loadServerConfig({ port: '0' }, { SKR_RELEASE_ENC: enc }).releaseEnc).toBe(enc);
  });
  it('refuses anything else, naming the allowed values', () => {
    expect(() => loadServerConfig({ port: '0' }, { SKR_RELEASE_ENC: 'RSA-OAEP' })).toThrow(ConfigError);
    expect(() => parseReleaseEnc('rsa_aes_key_wrap_256')).toThrow(/not one of CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256, RSA_AES_KEY_WRAP_384/);
  });
});
