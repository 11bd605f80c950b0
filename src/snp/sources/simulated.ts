/**
 * The simulated platform as an evidence source (`--simulate` / local mode). TEST ONLY: reports are
 * signed by a VCEK chaining to the simulator's committed test ARK, never to AMD.
 */
import { SimulatedEvidenceSource, SimulatedPlatform, SimulatedPlatformOptions } from '../simulator/platform';

export class SimulatedSource extends SimulatedEvidenceSource {
  /** Wrap an existing platform (to share its chain with emulators) or build one from options. */
  constructor(platform: SimulatedPlatform | SimulatedPlatformOptions = {}) {
    super(platform instanceof SimulatedPlatform ? platform : new SimulatedPlatform(platform));
  }
}

export { SimulatedPlatform, type SimulatedPlatformOptions };
