/**
 * Request-body handling shared by every route: the body is parsed as JSON whatever the
 * Content-Type (the reference does the same), and fields are validated with messages naming them.
 */
import type { Request } from 'express';
import { decodeBase64Strict } from '../common/bytes';
import { badRequest } from './http-errors';
import { jsonDepthExceeds } from './limits';

export type JsonObject = Record<string, unknown>;

/** Default nesting limit: the API's bodies are flat objects; 32 leaves room without risk. */
export const MAX_JSON_DEPTH = 32;

export function jsonBody(req: Request, maxDepth = MAX_JSON_DEPTH): JsonObject {
  const raw: unknown = req.body;
  const text = typeof raw === 'string' ? raw : Buffer.isBuffer(raw) ? raw.toString('utf8') : '';
  if (text.trim() === '') throw badRequest('request body is empty: expected a JSON object');
  if (jsonDepthExceeds(text, maxDepth)) throw badRequest(`request body nests deeper than ${maxDepth} levels`, 'ERR_JSON_DEPTH');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw badRequest('request body is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw badRequest('request body must be a JSON object');
  }
  return parsed as JsonObject;
}

export function requiredString(body: JsonObject, field: string): string {
  const v = body[field];
  if (v === undefined || v === null) throw badRequest(`${field} is required`, 'ERR_MISSING_FIELD');
  if (typeof v !== 'string') throw badRequest(`${field} must be a string`, 'ERR_FIELD_TYPE');
  if (v.trim() === '') throw badRequest(`${field} must not be empty`, 'ERR_FIELD_EMPTY');
  return v;
}

/** `runtime_data`: standard or URL-safe base64, nothing else. */
export function runtimeData(body: JsonObject): Buffer {
  const s = requiredString(body, 'runtime_data');
  const bytes = decodeBase64Strict(s.trim());
  if (!bytes) throw badRequest('runtime_data is not valid base64 (standard or URL-safe alphabet)', 'ERR_RUNTIME_DATA');
  return bytes;
}

/** MAA takes runtime data as JSON (it becomes the token's `x-ms-runtime`): refuse anything else up front. */
export function requireJson(bytes: Buffer, field: string): void {
  try {
    JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw badRequest(`${field} must be base64 of JSON text for MAA attestation`, 'ERR_RUNTIME_DATA');
  }
}
