// The wasmgate example plugin in JavaScript: a greeting and a small notes
// API, answering exactly as examples/hello (Rust) does.
//
// Storage layout in the plugin's kv namespace:
// - `note/<id as 16 zero-padded digits>`: a note as JSON; key order is
//   creation order because ids come from a counter.
// - `meta/next-id`: the next id to hand out.
// - `meta/count`: how many notes exist, kept in the same transactions as the
//   notes so the `max_notes` check cannot be raced past.

import * as configImport from 'wasmgate:plugin/config@0.2.2';
import * as kvImport from 'wasmgate:plugin/kv@0.2.2';
import * as logImport from 'wasmgate:plugin/log@0.2.2';

import {
  HttpError,
  Response,
  Router,
  config,
  kv,
  nowSecs,
  useCapabilities,
} from '../../sdk/js/wasmgate.js';

useCapabilities({ config: configImport, kv: kvImport, log: logImport });

const NOTE_PREFIX = 'note/';
const NEXT_ID = 'meta/next-id';
const COUNT = 'meta/count';
const MAX_TITLE_CHARS = 200;

const router = new Router()
  .get('/', greet)
  .get('/notes', listNotes)
  .post('/notes', createNote)
  .get('/notes/:id', showNote)
  .delete('/notes/:id', deleteNote);

const adminRouter = new Router().get('/stats', stats);

export const handler = { handle: (req) => router.serve(req) };
export const admin = { handle: (req) => adminRouter.serve(req) };

function greet() {
  return Response.json(200, { message: config.get('greeting', 'hello') });
}

function listNotes() {
  return Response.json(200, { notes: kv.listJson(NOTE_PREFIX).map(([, note]) => note) });
}

function createNote(req) {
  const input = req.json();
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw HttpError.badRequest('invalid JSON body: expected an object');
  }
  const { title, body = '' } = input;
  if (typeof title !== 'string') throw HttpError.badRequest('invalid JSON body: `title` must be a string');
  if (typeof body !== 'string') throw HttpError.badRequest('invalid JSON body: `body` must be a string');
  // Characters, not UTF-16 units: "é".repeat(200) is 200.
  const titleChars = [...title].length;
  if (titleChars === 0 || titleChars > MAX_TITLE_CHARS) {
    throw HttpError.badRequest(`title must be 1 to ${MAX_TITLE_CHARS} characters`);
  }
  const maxNotes = config.getInt('max_notes', 1000);
  const createdAt = nowSecs();

  const note = kv.transaction((txn) => {
    const count = txn.getJson(COUNT) ?? 0;
    if (count >= maxNotes) throw HttpError.conflict('too many notes');
    const id = txn.getJson(NEXT_ID) ?? 1;
    const note = { id: String(id), title, body, created_at: createdAt };
    txn.setJson(noteKey(id), note);
    txn.setJson(NEXT_ID, id + 1);
    txn.setJson(COUNT, count + 1);
    return note;
  });
  return Response.json(201, note);
}

function showNote(req, params) {
  const id = parseId(params.id);
  const note = id === undefined ? undefined : kv.getJson(noteKey(id));
  if (note === undefined) throw noteNotFound();
  return Response.json(200, note);
}

function deleteNote(req, params) {
  const id = parseId(params.id);
  if (id === undefined) throw noteNotFound();
  kv.transaction((txn) => {
    if (txn.get(noteKey(id)) === undefined) throw noteNotFound();
    const count = txn.getJson(COUNT) ?? 0;
    txn.delete(noteKey(id));
    txn.setJson(COUNT, Math.max(count - 1, 0));
  });
  return Response.empty(204);
}

function stats() {
  return Response.json(200, { notes: kv.count(NOTE_PREFIX) });
}

function noteKey(id) {
  return NOTE_PREFIX + String(id).padStart(16, '0');
}

// Only the canonical spelling of an id names a note ("7", not "07" or "+7").
function parseId(text) {
  if (!/^(0|[1-9][0-9]*)$/.test(text)) return undefined;
  const id = Number(text);
  return Number.isSafeInteger(id) ? id : undefined;
}

function noteNotFound() {
  return HttpError.notFound('note not found');
}
