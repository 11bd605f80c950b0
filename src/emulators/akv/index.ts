/** Key Vault / Managed HSM emulator. */
export * from './server';
export * from './errors';
export * from './api-version';
export * from './keys';
export * from './store';
export * from './operations';
export * from './target-token';
