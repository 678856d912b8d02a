// Helpers for wasmgate plugins written in JavaScript (built with
// componentize-js). One file, no third-party dependency.
//
// A router with `:param` segments, JSON in and out, errors that become
// responses, and thin wrappers over the capabilities the plugin's world
// imports (kv, keys, config, log). The answers match the Rust SDK's
// (plugins/sdk): no matching path is 404 {"error":"not found"}, a matching
// path without the method is 405 {"error":"method not allowed"} with
// `allow`, a thrown `HttpError(status, message)` is `status` with
// {"error": message}, and anything else thrown is 500
// {"error":"internal error"} with the details in the host log (stderr).
//
// Build against the world that `wasmgate wit` writes for the plugin's grants
// (`wasmgate wit --config config.yaml --plugin NAME --exports handler --out wit`),
// so the component imports only what is granted, export every interface
// that world exports, and hand the capability modules over:
//
//   import * as kvImport from 'wasmgate:plugin/kv@0.2.2';
//   import { Router, Response, kv, useCapabilities } from './wasmgate.js';
//   useCapabilities({ kv: kvImport });
//   const router = new Router()
//     .get('/count/:name', (req, p) => Response.json(200, { count: kv.getJson(p.name) ?? 0 }));
//   export const handler = { handle: (req) => router.serve(req) };
//
// A capability not handed over is not an error until it is used: then the
// request fails with a 500 and the log says which grant to add.

// The capabilities' bindings, as the plugin hands them over with
// `useCapabilities`. componentize-js resolves only the `wasmgate:plugin/...`
// modules some file imports statically, and refuses to build a static import
// of an interface the world lacks; so this file imports none, and a plugin
// imports exactly the interfaces of its world.
const bindings = {};

/**
 * Hands the capability modules the plugin imports to these helpers:
 *
 *   import * as kv from 'wasmgate:plugin/kv@0.2.2';
 *   import * as config from 'wasmgate:plugin/config@0.2.2';
 *   useCapabilities({ kv, config });
 */
export function useCapabilities(modules) {
  Object.assign(bindings, modules);
}

/** The message of every `HttpError.internal`. */
export const INTERNAL = 'internal error';
/** The message of a size error from kv: what the client sent was too large. */
export const TOO_LARGE = 'a value in the request is too large';

/** A capability the plugin did not hand over (or its world does not import) was used. */
export class MissingCapability extends Error {
  constructor(name) {
    super(
      `the plugin used \`${name}\` without importing it: add \`${name}\` under its \`grants:\` in the ` +
        'config, regenerate the world with `wasmgate wit --config CONFIG --plugin NAME --out DIR`, ' +
        `then import it (\`import * as ${name} from 'wasmgate:plugin/${name}@0.2.2'\`), ` +
        `pass it to \`useCapabilities({ ${name} })\` and rebuild`,
    );
    this.name = 'MissingCapability';
    this.capability = name;
  }
}

/** The raw bindings of a capability handed over with `useCapabilities`, or MissingCapability. */
export function binding(name) {
  const b = bindings[name];
  if (!b) throw new MissingCapability(name);
  return b;
}

/** An error answer: `status` with the body {"error": message}. */
export class HttpError extends Error {
  constructor(status, message) {
    super(`${status} ${message}`);
    this.name = 'HttpError';
    this.status = status;
    this.error = message;
  }
  static badRequest(m) { return new HttpError(400, m); }
  static unauthorized(m) { return new HttpError(401, m); }
  static forbidden(m) { return new HttpError(403, m); }
  static notFound(m) { return new HttpError(404, m); }
  static methodNotAllowed() { return new HttpError(405, 'method not allowed'); }
  static conflict(m) { return new HttpError(409, m); }
  static payloadTooLarge(m) { return new HttpError(413, m); }
  static tooManyRequests(m) { return new HttpError(429, m); }
  static unavailable(m) { return new HttpError(503, m); }
  /** 500 `internal error`; `detail` goes to the host log, never to the client. */
  static internal(detail) {
    console.error(`internal error: ${detail}`);
    return new HttpError(500, INTERNAL);
  }
  response() {
    return Response.json(this.status, { error: this.error });
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const lossy = new TextDecoder('utf-8');

/** JSON.stringify that writes BigInt (WIT u64) as a number. */
function stringify(value) {
  return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? Number(v) : v));
}

function toBytes(value) {
  return typeof value === 'string' ? encoder.encode(value) : new Uint8Array(value);
}

/** The answer to a request. The host adds content-length and x-request-id. */
export class Response {
  constructor(status, headers = [], body = new Uint8Array()) {
    this.status = status;
    this.headers = headers;
    this.body = toBytes(body);
  }
  static json(status, value) {
    return new Response(status, [['content-type', 'application/json']], stringify(value));
  }
  static text(status, text) {
    return new Response(status, [['content-type', 'text/plain; charset=utf-8']], text);
  }
  static empty(status) {
    return new Response(status);
  }
  withHeader(name, value) {
    this.headers.push([name, value]);
    return this;
  }
  toWit() {
    return { status: this.status, headers: this.headers, body: this.body };
  }
}

/** One HTTP request, fully read by the host. */
export class Request {
  constructor(raw) {
    this.raw = raw;
    this.method = raw.method;
    this.fullPath = raw.path;
    this.prefix = raw.prefix;
    this.queryString = raw.query;
    this.headers = raw.headers;
    this.body = raw.body;
    this.clientAddr = raw.clientAddr;
    this.requestId = raw.requestId;
    const base = raw.prefix.replace(/\/+$/, '');
    const rest = raw.path.startsWith(base) ? raw.path.slice(base.length) : null;
    /** The path below the mount prefix, always starting with '/'. */
    this.path = rest !== null && (rest === '' || rest.startsWith('/')) ? rest || '/' : raw.path || '/';
  }
  /** The first value of the header `name`, whatever its case. */
  header(name) {
    const n = name.toLowerCase();
    const found = this.headers.find(([k]) => k.toLowerCase() === n);
    return found ? found[1] : undefined;
  }
  /** The first value of the query parameter `name`, decoded. */
  query(name) {
    for (const pair of this.queryString.split('&')) {
      if (pair === '') continue;
      const i = pair.indexOf('=');
      const k = decodeForm(i < 0 ? pair : pair.slice(0, i));
      if (k === name) return decodeForm(i < 0 ? '' : pair.slice(i + 1));
    }
    return undefined;
  }
  /** The body as text, or a 400. */
  text() {
    try {
      return decoder.decode(this.body);
    } catch {
      throw HttpError.badRequest('request body is not valid UTF-8');
    }
  }
  /** The body parsed as JSON, or a 400 that says what is wrong. */
  json() {
    const text = this.text();
    try {
      return JSON.parse(text);
    } catch (e) {
      throw HttpError.badRequest(`invalid JSON body: ${e.message}`);
    }
  }
}

/** Percent-decoding that keeps malformed escapes as they are and replaces invalid UTF-8. */
export function percentDecode(text) {
  if (!text.includes('%')) return text;
  const bytes = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x25 && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 1, i + 3))) {
      bytes.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...encoder.encode(text[i]));
    }
  }
  return lossy.decode(new Uint8Array(bytes));
}

function decodeForm(text) {
  return percentDecode(text.replace(/\+/g, ' '));
}

function match(pattern, path) {
  const want = pattern.split('/');
  const got = path.split('/');
  if (want.length !== got.length) return null;
  const params = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i].startsWith(':')) {
      if (got[i] === '') return null;
      params[want[i].slice(1)] = percentDecode(got[i]);
    } else if (want[i] !== got[i]) {
      return null;
    }
  }
  return params;
}

/**
 * Method-and-path routing over `Request.path` (the path below the mount).
 * A segment `:name` matches any one non-empty segment and binds it,
 * percent-decoded, in the handler's `params`. Routes are tried in the order
 * they were added. A handler is `(req, params) => Response` and may throw
 * an `HttpError`.
 */
export class Router {
  constructor() {
    this.routes = [];
  }
  route(method, pattern, handler) {
    this.routes.push({ method, pattern, handler });
    return this;
  }
  get(p, h) { return this.route('GET', p, h); }
  post(p, h) { return this.route('POST', p, h); }
  put(p, h) { return this.route('PUT', p, h); }
  patch(p, h) { return this.route('PATCH', p, h); }
  delete(p, h) { return this.route('DELETE', p, h); }
  /** Runs the first route matching `req` (a Request); may throw an HttpError. */
  handle(req) {
    const allowed = [];
    for (const { method, pattern, handler } of this.routes) {
      const params = match(pattern, req.path);
      if (params === null) continue;
      if (method === req.method) return handler(req, params);
      if (!allowed.includes(method)) allowed.push(method);
    }
    if (allowed.length === 0) throw HttpError.notFound('not found');
    return HttpError.methodNotAllowed().response().withHeader('allow', allowed.join(', '));
  }
  /** The WIT response for the WIT request `raw`: what `handle` of an export returns. */
  serve(raw) {
    return serve((req) => this.handle(req), raw);
  }
}

/**
 * Calls `handler(Request)`, turning an HttpError into its JSON answer and
 * anything else thrown into a 500 with the details in the log.
 */
export function serve(handler, raw) {
  let response;
  try {
    response = handler(new Request(raw));
  } catch (e) {
    if (e instanceof HttpError) {
      response = e.response();
    } else {
      console.error(`unhandled error: ${e && e.stack ? `${e}\n${e.stack}` : e}`);
      response = new HttpError(500, INTERNAL).response();
    }
  }
  return response.toWit();
}

/** Unix seconds, from the host's wall clock. */
export function nowSecs() {
  return Math.floor(Date.now() / 1000);
}

// A WIT `result` error as componentize-js throws it: its payload is the
// variant, `{ tag, val }`.
function payload(e) {
  return e && typeof e === 'object' && 'payload' in e ? e.payload : e;
}

function kvError(e) {
  const p = payload(e);
  switch (p && p.tag) {
    case 'key-too-large':
    case 'value-too-large':
      console.error(`kv: ${p.tag} (limit ${p.val} bytes)`);
      return HttpError.payloadTooLarge(TOO_LARGE);
    case 'empty-key':
      return HttpError.badRequest('empty key');
    case 'conflict':
      return HttpError.conflict('conflicting concurrent update, retry');
    case 'closed':
      return HttpError.internal('kv transaction already committed');
    case 'storage':
      return HttpError.internal(`kv storage: ${p.val}`);
    default:
      return e;
  }
}

function kvCall(f) {
  try {
    return f();
  } catch (e) {
    throw kvError(e);
  }
}

function decodeJson(key, bytes) {
  try {
    return JSON.parse(lossy.decode(bytes));
  } catch (e) {
    throw HttpError.internal(`stored value at ${JSON.stringify(key)} is not JSON: ${e.message}`);
  }
}

/** An all-or-nothing set of writes; reads see its own writes. Use it through `kv.transaction`. */
export class Txn {
  constructor(handle) {
    this.handle = handle;
  }
  get(key) { return kvCall(() => this.handle.get(key)); }
  set(key, value) { kvCall(() => this.handle.set(key, toBytes(value))); }
  delete(key) { kvCall(() => this.handle.delete(key)); }
  getJson(key) {
    const v = this.get(key);
    return v === undefined ? undefined : decodeJson(key, v);
  }
  setJson(key, value) { this.set(key, stringify(value)); }
}

/**
 * The plugin's key-value store (grant `kv`): values are Uint8Array (a
 * string is stored as UTF-8), or JSON through the `Json` variants. Keys sort
 * as bytes, so zero-padded numbers list in numeric order.
 */
export const kv = {
  /** How often `transaction` runs its function before giving up on conflicts. */
  MAX_ATTEMPTS: 16,
  get(key) { return kvCall(() => binding('kv').get(key)); },
  set(key, value) { kvCall(() => binding('kv').set(key, toBytes(value))); },
  /** Returns whether the key existed. */
  delete(key) { return kvCall(() => binding('kv').delete(key)); },
  count(prefix) { return Number(kvCall(() => binding('kv').count(prefix))); },
  /** Every [key, bytes] whose key starts with `prefix`, in key order. */
  list(prefix) {
    const out = [];
    let cursor;
    for (;;) {
      const page = kvCall(() => binding('kv').list(prefix, cursor, 1000));
      out.push(...page.entries);
      if (page.next === undefined || page.next === null) return out;
      cursor = page.next;
    }
  },
  getJson(key) {
    const v = this.get(key);
    return v === undefined ? undefined : decodeJson(key, v);
  },
  setJson(key, value) { this.set(key, stringify(value)); },
  listJson(prefix) { return this.list(prefix).map(([k, v]) => [k, decodeJson(k, v)]); },
  /**
   * Runs `fn(txn)` in a fresh transaction and commits it, running it again
   * in a new one when the commit finds a conflict; an exception from `fn`
   * discards the transaction. After MAX_ATTEMPTS conflicts in a row the
   * answer is a 503. `fn` may run several times.
   */
  transaction(fn) {
    const raw = binding('kv');
    for (let i = 0; i < this.MAX_ATTEMPTS; i++) {
      const handle = new raw.Txn();
      const result = fn(new Txn(handle));
      try {
        handle.commit();
        return result;
      } catch (e) {
        const p = payload(e);
        if (!(p && p.tag === 'conflict')) throw kvError(e);
      }
    }
    throw HttpError.unavailable('too many concurrent updates, retry');
  },
};

function keysCall(f) {
  try {
    return f();
  } catch (e) {
    const p = payload(e);
    if (p && p.tag === 'invalid') throw HttpError.badRequest(p.val);
    if (p && p.tag === 'storage') throw HttpError.internal(`keys storage: ${p.val}`);
    throw e;
  }
}

function keyInfo(i) {
  return {
    id: i.id,
    role: i.role,
    label: i.label,
    created_at: Number(i.createdAt),
    expires_at: i.expiresAt === undefined ? null : Number(i.expiresAt),
  };
}

/** API keys for the plugin's callers (grant `keys`); the host keeps digests only. */
export const keys = {
  /** { info, secret }; the secret is shown only here. */
  issue(role, label, expiresAt) {
    const issued = keysCall(() =>
      binding('keys').issue(role, label, expiresAt == null ? undefined : BigInt(expiresAt)),
    );
    return { info: keyInfo(issued.info), secret: issued.secret };
  },
  /** The key's info when the secret is known and not expired, else undefined. */
  verify(secret) {
    const info = keysCall(() => binding('keys').verify(secret));
    return info === undefined ? undefined : keyInfo(info);
  },
  /** Returns whether the key existed. */
  revoke(id) { return keysCall(() => binding('keys').revoke(id)); },
  list() { return keysCall(() => binding('keys').list()).map(keyInfo); },
  /** The key behind `authorization: Bearer <secret>`, or a 401 `invalid key`. */
  authenticate(req) {
    const value = req.header('authorization') || '';
    for (const scheme of ['Bearer ', 'bearer ']) {
      if (value.startsWith(scheme)) {
        const secret = value.slice(scheme.length).trim();
        const info = secret ? this.verify(secret) : undefined;
        if (info) return info;
      }
    }
    throw HttpError.unauthorized('invalid key');
  },
};

/** The plugin's `settings:` (grant `config`). */
export const config = {
  /** A top-level setting: scalars as their text, lists and maps as JSON. */
  get(key, fallback) {
    const v = binding('config').get(key);
    return v === undefined ? fallback : v;
  },
  /** A setting as an integer; an unparseable value is a 500. */
  getInt(key, fallback) {
    const v = binding('config').get(key);
    if (v === undefined) return fallback;
    if (!/^\s*[+-]?\d+\s*$/.test(v)) throw HttpError.internal(`setting ${JSON.stringify(key)} has an invalid value`);
    return Number.parseInt(v, 10);
  },
  /** Every setting as one object. */
  all() { return JSON.parse(binding('config').all()); },
};

/**
 * Lines in the host log, tagged with the plugin and the request id (grant
 * `log`). Without the grant, console.error also reaches the log.
 */
export const log = {
  trace(m) { binding('log').log('trace', String(m)); },
  debug(m) { binding('log').log('debug', String(m)); },
  info(m) { binding('log').log('info', String(m)); },
  warn(m) { binding('log').log('warn', String(m)); },
  error(m) { binding('log').log('error', String(m)); },
};
