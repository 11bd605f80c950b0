/** TEST ONLY: a simulated Azure confidential VM on swtpm (paravisor, vTPM CA, provisioning). */
export * from './paravisor';
export * from './provision';
export * from './test-only-vtpm-ca';
export * from './swtpm-process';
