import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'native/build/**', 'coverage/**', 'jest.config.js', 'scripts/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      // Given a Buffer, Node's X509Certificate takes the first PEM block found in the bytes, and real
      // certificates (MAA's signing certificates) carry PEM text inside their DER.
      'no-restricted-syntax': [
        'error',
        {
          selector: "NewExpression[callee.name='X509Certificate'], NewExpression[callee.property.name='X509Certificate']",
          message: 'Build certificates with certificateFromDer / certificatesFromPem (src/asn1/certificate.ts), never new X509Certificate.',
        },
      ],
    },
  },
  { files: ['src/asn1/certificate.ts'], rules: { 'no-restricted-syntax': 'off' } },
  {
    // src/common is the bottom layer: every other folder of src may use it, it uses none of them.
    files: ['src/common/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^\\.\\.(/|$)',
              message: 'src/common must not import from the layers above it (server, cli, akv, maa, certs, snp, cvm, tpm, cose, asn1, emulators, ...).',
            },
          ],
        },
      ],
    },
  },
);
