/**
 * What every ARM template under arm/ must be, whatever it deploys: a deployment template whose
 * parameters and variables are all declared and all used, typed and described, with defaults inside
 * their allowed values and bounds, resources (and reference() calls) on known-good api-versions, and a
 * parameter file that names only declared parameters and gives a visible placeholder for each one the
 * user must supply. arm.test.ts and arm-cvm.test.ts run these for each of their templates.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO } from './helpers';

export type Json = Record<string, unknown>;

export const loadJson = (rel: string) => JSON.parse(fs.readFileSync(path.join(REPO, rel), 'utf8')) as Json;

/** Key Vault Crypto Service Release User (built-in role). */
export const RELEASE_USER_ROLE = '08bbd89e-9f13-488c-ac41-acfcb10c90ab';
/** Key Vault Reader: keys/read, so the sidecar can read a refused key's release policy and explain the 403. */
export const KEY_READER_ROLE = '21090545-7ca7-4776-b22c-e363652d74d2';

export function refs(src: string, kind: 'parameters' | 'variables'): Set<string> {
  return new Set([...src.matchAll(new RegExp(`${kind}\\('([^']+)'\\)`, 'g'))].map((m) => m[1]));
}

/** Strings inside a JSON value, with the key names too (ARM evaluates expressions in keys). */
export function strings(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => strings(x, out));
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      out.push(k);
      strings(x, out);
    }
  }
  return out;
}

/** Every expression-bearing string of a template, one per line. */
export function templateText(t: Json): string {
  return strings({ resources: t.resources, outputs: t.outputs, variables: t.variables, parameters: t.parameters }).join('\n');
}

/** The `it`s every template gets; call inside a describe. `rel` is the template's path from the repository root. */
export function itIsWellFormedTemplate(rel: string, apiVersions: Record<string, string>): void {
  const t = loadJson(rel);
  const params = (t.parameters ?? {}) as Record<string, Json>;
  const vars = (t.variables ?? {}) as Record<string, unknown>;
  const all = templateText(t);

  it('is a deployment template', () => {
    expect(t.$schema).toBe('https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#');
    expect(t.contentVersion).toBe('1.0.0.0');
  });

  it('declares every parameter and variable it references, and uses every one it declares', () => {
    expect([...refs(all, 'parameters')].sort()).toEqual(Object.keys(params).sort());
    expect([...refs(all, 'variables')].sort()).toEqual(Object.keys(vars).sort());
  });

  it('types and describes every parameter, and keeps defaults inside allowedValues and bounds', () => {
    for (const [name, p] of Object.entries(params)) {
      expect([name, ['string', 'int', 'bool', 'array', 'object', 'securestring'].includes(String(p.type))]).toEqual([name, true]);
      if (Array.isArray(p.allowedValues) && 'defaultValue' in p) expect(p.allowedValues).toContain(p.defaultValue);
      if (typeof p.defaultValue === 'number') {
        expect(p.defaultValue).toBeGreaterThanOrEqual(Number(p.minValue ?? -Infinity));
        expect(p.defaultValue).toBeLessThanOrEqual(Number(p.maxValue ?? Infinity));
      }
      expect([name, typeof (p.metadata as Json | undefined)?.description]).toEqual([name, 'string']);
    }
  });

  it('gives every resource a known-good api-version, in resources and in every reference() call', () => {
    for (const r of t.resources as Json[]) expect([r.type, r.apiVersion]).toEqual([r.type, apiVersions[String(r.type)]]);
    const calls = [...all.matchAll(/reference\((variables\('([^']+)'\)|resourceId\('([^']+)'(?:[^()]|\([^()]*\))*\)), '([^']+)'\)/g)];
    // Every reference( is one this check understood (none slips past in another form).
    expect(calls.length).toBe(all.split('reference(').length - 1);
    for (const m of calls) {
      const type = m[3] ?? /resourceId\('([^']+)'/.exec(String(vars[m[2]]))?.[1];
      expect([type, m[4]]).toEqual([type, apiVersions[String(type)]]);
    }
  });

  it('has a parameter file with placeholders for every required parameter and nothing undeclared', () => {
    const pf = loadJson(rel.replace(/\.json$/, '.parameters.json'));
    expect(pf.$schema).toBe('https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#');
    const given = pf.parameters as Record<string, Json>;
    for (const k of Object.keys(given)) expect([k, k in params]).toEqual([k, true]);
    for (const [k, p] of Object.entries(params)) if (!('defaultValue' in p)) expect([k, k in given]).toEqual([k, true]);
    for (const [k, v] of Object.entries(given)) {
      const allowed = params[k].allowedValues;
      if (Array.isArray(allowed)) expect(allowed).toContain(v.value);
      // Values the user must supply hold visible <placeholders>, never plausible-looking values.
      if (!('defaultValue' in params[k])) expect([k, String(v.value)]).toEqual([k, expect.stringMatching(/<[^<>]+>/)]);
    }
  });
}
