"""The wasmgate example plugin in Python: a greeting and a small notes API,
answering exactly as examples/hello (Rust) does.

Storage layout in the plugin's kv namespace:
- ``note/<id as 16 zero-padded digits>``: a note as JSON; key order is
  creation order because ids come from a counter.
- ``meta/next-id``: the next id to hand out.
- ``meta/count``: how many notes exist, kept in the same transactions as the
  notes so the ``max_notes`` check cannot be raced past.
"""

from wit_world import exports

from wasmgate import Error, Response, Router, config, kv, now_secs

NOTE_PREFIX = "note/"
NEXT_ID = "meta/next-id"
COUNT = "meta/count"
MAX_TITLE_CHARS = 200

router = Router()
admin = Router()


@router.get("/")
def greet(req, params):
    return Response.json(200, {"message": config.get("greeting", "hello")})


@router.get("/notes")
def list_notes(req, params):
    return Response.json(200, {"notes": [note for _, note in kv.list_json(NOTE_PREFIX)]})


@router.post("/notes")
def create_note(req, params):
    new = req.json()
    if not isinstance(new, dict):
        raise Error.bad_request("invalid JSON body: expected an object")
    title, body = new.get("title"), new.get("body", "")
    if not isinstance(title, str):
        raise Error.bad_request("invalid JSON body: `title` must be a string")
    if not isinstance(body, str):
        raise Error.bad_request("invalid JSON body: `body` must be a string")
    if not 1 <= len(title) <= MAX_TITLE_CHARS:
        raise Error.bad_request(f"title must be 1 to {MAX_TITLE_CHARS} characters")
    max_notes = config.get_int("max_notes", 1000)
    created_at = now_secs()

    def create(txn):
        count = txn.get_json(COUNT) or 0
        if count >= max_notes:
            raise Error.conflict("too many notes")
        note_id = txn.get_json(NEXT_ID) or 1
        note = {"id": str(note_id), "title": title, "body": body, "created_at": created_at}
        txn.set_json(note_key(note_id), note)
        txn.set_json(NEXT_ID, note_id + 1)
        txn.set_json(COUNT, count + 1)
        return note

    return Response.json(201, kv.transaction(create))


@router.get("/notes/:id")
def show_note(req, params):
    note_id = parse_id(params["id"])
    note = None if note_id is None else kv.get_json(note_key(note_id))
    if note is None:
        raise note_not_found()
    return Response.json(200, note)


@router.delete("/notes/:id")
def delete_note(req, params):
    note_id = parse_id(params["id"])
    if note_id is None:
        raise note_not_found()

    def delete(txn):
        if txn.get(note_key(note_id)) is None:
            raise note_not_found()
        count = txn.get_json(COUNT) or 0
        txn.delete(note_key(note_id))
        txn.set_json(COUNT, max(count - 1, 0))

    kv.transaction(delete)
    return Response.empty(204)


@admin.get("/stats")
def stats(req, params):
    return Response.json(200, {"notes": kv.count(NOTE_PREFIX)})


def note_key(note_id):
    return f"{NOTE_PREFIX}{note_id:016}"


def parse_id(text):
    """Only the canonical spelling of an id names a note ("7", not "07" or "+7")."""
    if not text.isascii() or not text.isdigit():
        return None
    note_id = int(text)
    return note_id if str(note_id) == text and note_id < 2**64 else None


def note_not_found():
    return Error.not_found("note not found")


class Handler(exports.Handler):
    def handle(self, req):
        return router.serve(req)


class Admin(exports.Admin):
    def handle(self, req):
        return admin.serve(req)
