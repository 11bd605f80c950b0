/** The local MAA emulator (SevSnpVm flow). */
export * from './server';
export * from './claims';
export * from './policy';
export * from './refusal';
export * from './signing-key';
export * from './verify-evidence';
export * from './azure-guest';
