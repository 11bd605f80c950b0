/** Our TPM 2.0 client: transports, marshalling, commands, typed errors. */
export * from './constants';
export * from './errors';
export * from './marshal';
export * from './structures';
export * from './transport';
export * from './command-stream';
export * from './client';
export * from './templates';
