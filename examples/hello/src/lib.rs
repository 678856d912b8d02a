//! The wasmgate example plugin: a greeting and a small notes API.
//!
//! Storage layout in the plugin's kv namespace:
//! - `note/<id as 16 zero-padded digits>`: a [`Note`] as JSON; key order is
//!   creation order because ids come from a counter.
//! - `meta/next-id`: the next id to hand out.
//! - `meta/count`: how many notes exist, kept in the same transactions as the
//!   notes so the `max_notes` check cannot be raced past.

use serde::{Deserialize, Serialize};
use serde_json::json;
use wasmgate_sdk::{Error, Params, Plugin, Request, Response, Router, config, kv};

const NOTE_PREFIX: &str = "note/";
const NEXT_ID: &str = "meta/next-id";
const COUNT: &str = "meta/count";
const MAX_TITLE_CHARS: usize = 200;

#[derive(Serialize, Deserialize)]
struct Note {
    id: String,
    title: String,
    body: String,
    created_at: u64,
}

#[derive(Deserialize)]
struct NewNote {
    title: String,
    #[serde(default)]
    body: String,
}

struct Hello;

impl Plugin for Hello {
    fn handle(req: &Request) -> Result<Response, Error> {
        Router::new()
            .get("/", greet)
            .get("/notes", list_notes)
            .post("/notes", create_note)
            .get("/notes/:id", show_note)
            .delete("/notes/:id", delete_note)
            .handle(req)
    }

    fn admin(req: &Request) -> Result<Response, Error> {
        Router::new().get("/stats", stats).handle(req)
    }
}

wasmgate_sdk::export_plugin!(Hello);

fn greet(_: &Request, _: &Params) -> Result<Response, Error> {
    let greeting = config::get_or("greeting", "hello");
    Ok(Response::json(200, &json!({ "message": greeting })))
}

/// A struct rather than `json!` so that each note keeps its field order.
#[derive(Serialize)]
struct NoteList {
    notes: Vec<Note>,
}

fn list_notes(_: &Request, _: &Params) -> Result<Response, Error> {
    let notes = kv::list_json(NOTE_PREFIX)?
        .into_iter()
        .map(|(_, note)| note)
        .collect();
    Ok(Response::json(200, &NoteList { notes }))
}

fn create_note(req: &Request, _: &Params) -> Result<Response, Error> {
    let new: NewNote = req.json()?;
    let title_chars = new.title.chars().count();
    if title_chars == 0 || title_chars > MAX_TITLE_CHARS {
        return Err(Error::bad_request(format!(
            "title must be 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    let max_notes: u64 = config::parse_or("max_notes", 1000)?;
    let created_at = wasmgate_sdk::time::now_secs();

    let note = kv::transaction(|txn| {
        let count: u64 = txn.get_json(COUNT)?.unwrap_or(0);
        if count >= max_notes {
            return Err(Error::conflict("too many notes"));
        }
        let id: u64 = txn.get_json(NEXT_ID)?.unwrap_or(1);
        let note = Note {
            id: id.to_string(),
            title: new.title.clone(),
            body: new.body.clone(),
            created_at,
        };
        txn.set_json(&note_key(id), &note)?;
        txn.set_json(NEXT_ID, &(id + 1))?;
        txn.set_json(COUNT, &(count + 1))?;
        Ok(note)
    })?;
    Ok(Response::json(201, &note))
}

fn show_note(_: &Request, params: &Params) -> Result<Response, Error> {
    let note: Note = parse_id(&params["id"])
        .map(|id| kv::get_json(&note_key(id)))
        .transpose()?
        .flatten()
        .ok_or_else(note_not_found)?;
    Ok(Response::json(200, &note))
}

fn delete_note(_: &Request, params: &Params) -> Result<Response, Error> {
    let id = parse_id(&params["id"]).ok_or_else(note_not_found)?;
    kv::transaction(|txn| {
        if txn.get(&note_key(id))?.is_none() {
            return Err(note_not_found());
        }
        let count: u64 = txn.get_json(COUNT)?.unwrap_or(0);
        txn.delete(&note_key(id))?;
        txn.set_json(COUNT, &count.saturating_sub(1))
    })?;
    Ok(Response::empty(204))
}

fn stats(_: &Request, _: &Params) -> Result<Response, Error> {
    let notes = kv::count(NOTE_PREFIX)?;
    Ok(Response::json(200, &json!({ "notes": notes })))
}

fn note_key(id: u64) -> String {
    format!("{NOTE_PREFIX}{id:016}")
}

/// Only the canonical spelling of an id names a note ("7", not "07" or "+7").
fn parse_id(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().filter(|id| id.to_string() == text)
}

fn note_not_found() -> Error {
    Error::not_found("note not found")
}
