/** Public surface of the collateral layer. */
export * from './types';
export * from './errors';
export * from './pem';
export * from './vcek';
export * from './thim';
export * from './roots';
export * from './verify';
export * from './cache';
export * from './provider';
export * from './sources/http';
export * from './sources/security-context';
export * from './sources/local-thim';
export * from './sources/amd-kds';
export * from './sources/azure-cache';
export * from './sources/from-args';
