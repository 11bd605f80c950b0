export * from './server';
export * from './tokens';
export * from './state';
