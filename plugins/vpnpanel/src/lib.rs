#![doc = include_str!("../README.md")]
//!
//! ## The code
//!
//! vpnpanel: the multi-protocol VPN panel v3 API as a wasmgate plugin.
//!
//! The modules are layers; a module imports only from its own layer or the
//! layers before it, never from a later one (the `layers` test below checks
//! the `use`s and paths of every file):
//!
//! 0. base: [`fail`] (the error of every layer: a status and the message
//!    answered), [`util`] (clock, random hex, constant-time equality),
//!    [`validate`] (pure checks of fields);
//! 1. [`store`]: records and keys: the kv layout, the record types, their
//!    (de)serialisation and low-level kv access;
//! 2. [`domain`]: what the panel decides: users, sub-admins, nodes, ports,
//!    traffic and limits, the PKI, WireGuard, keeping servers in step; it
//!    takes a caller, ids and JSON fields and never sees a request;
//! 3. [`api`]: routing, request parsing (caller, path, body, pages) and the
//!    response envelope;
//! 4. this file: the plugin's entry points, which hand requests to [`api`]
//!    and jobs to [`domain`], and the node mode (settings `mode: node`).
//!
//! Within a layer there is no cycle either ([`domain`] lists its order).
//! Read in the same order: the store's layout, then the domain, then the
//! API.

pub mod api;
pub mod domain;
pub mod fail;
pub mod store;
pub mod util;
pub mod validate;

use wasmgate_sdk::{Error, Plugin, Request, Response, config};

use crate::domain::{node_mode, nodes, panel_jobs, sync, traffic, users};

struct VpnPanel;

impl Plugin for VpnPanel {
    fn handle(req: &Request) -> Result<Response, Error> {
        if config::get("mode").as_deref() == Some("node") {
            return Ok(api::node_mode::handle(req));
        }
        Ok(api::handle(req))
    }

    fn admin(req: &Request) -> Result<Response, Error> {
        api::admin::handle(req)
    }

    fn job(name: &str, payload: &[u8]) -> Result<(), String> {
        if config::get("mode").as_deref() == Some("node") {
            return node_mode::job(name, payload);
        }
        match name {
            sync::JOB_SYNC => panel_jobs::sync_job(),
            traffic::JOB_ENFORCE => panel_jobs::enforce_job(payload),
            users::JOB_CERT => users::cert_job(payload),
            n if n.starts_with("node.") => nodes::job(n, payload),
            other => Err(format!("no job handler for {other:?}")),
        }
    }
}

wasmgate_sdk::export_plugin!(VpnPanel);

#[cfg(test)]
mod layers {
    //! The layer rule of the module docs, checked on the sources: every
    //! `crate::` path of a file (its tests aside) names a module of its own
    //! layer or of a layer before it, and within a layer only a module
    //! listed before it in [`ORDER`], so no two modules need each other.

    use std::path::{Path, PathBuf};

    /// The layers, first to last, each with its modules in the order they
    /// may use each other (a layer's `mod.rs` is named by the layer).
    const ORDER: &[(&str, &[&str])] = &[
        ("base", &["fail", "util", "validate"]),
        (
            "store",
            &[
                "store",
                "meta",
                "node_mode",
                "nodes",
                "pki",
                "ports",
                "users",
                "wg",
            ],
        ),
        (
            "domain",
            &[
                "domain",
                "caller",
                "peer",
                "periodic",
                "wg",
                "servers",
                "pki",
                "settings",
                "sync",
                "nodes",
                "ports",
                "traffic",
                "panel_jobs",
                "users",
                "sub_admins",
                "node_mode",
            ],
        ),
        (
            "api",
            &[
                "envelope",
                "auth",
                "sub",
                "users",
                "sub_admins",
                "settings",
                "traffic",
                "nodes",
                "ports",
                "node_mode",
                "admin",
                "api",
            ],
        ),
        ("lib", &["lib"]),
    ];

    /// (layer, place in the layer) of a module path such as
    /// `["domain", "users"]`, `["store"]` or `["fail"]`.
    fn rank(path: &[&str]) -> (usize, usize) {
        let (layer, module) = match path {
            [l @ ("store" | "domain" | "api")] => (*l, *l),
            [l @ ("store" | "domain" | "api"), m, ..] => (*l, *m),
            [m @ ("fail" | "util" | "validate"), ..] => ("base", *m),
            // An item of the crate root (this file).
            _ => ("lib", "lib"),
        };
        let (i, (_, modules)) = ORDER
            .iter()
            .enumerate()
            .find(|(_, (name, _))| *name == layer)
            .expect("a layer");
        let j = modules
            .iter()
            .position(|m| *m == module)
            // An item of a layer's mod.rs, e.g. `crate::store::scan`.
            .unwrap_or_else(|| modules.iter().position(|m| *m == layer).unwrap_or(0));
        (i, j)
    }

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The `crate::` paths of `code`: `crate::a::b` as `[a, b]`, and each
    /// entry of a group, `crate::a::{b, c::d}` as `[a, b]`, `[a, c]`.
    fn paths(code: &str) -> Vec<Vec<&str>> {
        let mut out = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let mut head: Vec<&str> = Vec::new();
            let mut s = rest;
            loop {
                let n = s
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(s.len());
                if n == 0 {
                    break;
                }
                head.push(&s[..n]);
                match s[n..].strip_prefix("::") {
                    Some(more) => s = more,
                    None => break,
                }
            }
            if let Some(group) = s.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for entry in group.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    let first = entry.split("::").next().unwrap_or(entry).trim();
                    let mut p = head.clone();
                    if first != "self" {
                        p.push(first);
                    }
                    out.push(p);
                }
            } else {
                out.push(head);
            }
        }
        out
    }

    #[test]
    fn no_module_uses_a_later_one() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        assert!(all.len() > 20, "found the sources");
        let mut broken = Vec::new();
        for file in all {
            let rel = file.strip_prefix(&src).expect("under src");
            let mut module: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            let module: Vec<&str> = module.iter().map(String::as_str).collect();
            let here = rank(&module);
            let text = std::fs::read_to_string(&file).expect("read");
            // Comments and the tests at the end aside.
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            for path in paths(&code) {
                let there = rank(&path);
                if there > here {
                    broken.push(format!("{} uses crate::{}", rel.display(), path.join("::")));
                }
            }
        }
        assert!(broken.is_empty(), "{broken:#?}");
    }
}
