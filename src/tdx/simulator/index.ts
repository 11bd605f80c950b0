/** The simulated Intel TDX machine: TEST ONLY (its Intel-like chain is rooted in committed, public keys). */
export { SimulatedTdxPlatform, SIMULATED_TD_MEASUREMENTS } from './platform';
export { TEST_ONLY_INTEL_ROOT_PEM, simulatedPckChainPem, mintIntelRoot, simulatedIntelKeys } from './chain';
export { mintSimulatedTdxCollateral, simulatedTcbSigning } from './collateral';
export { SIMULATED_PCK_PLATFORM } from './chain';
