//! What `build` and `inspect` read of a component without compiling it:
//! its top-level imports and exports, and whether the manifest describes
//! them (the WIT version they name, the grants they need, the `handler`
//! export every plugin has).

use wasmparser::{Parser, Payload};

use super::manifest::Manifest;

/// The names a component imports and exports at its top level, e.g.
/// `wasmgate:plugin/kv@0.2.0`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interfaces {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

const PLUGIN_PACKAGE: &str = "wasmgate:plugin/";

/// Reads `bytes`' top-level imports and exports; refuses what is not a
/// WebAssembly component.
pub fn interfaces(bytes: &[u8]) -> Result<Interfaces, String> {
    if !Parser::is_component(bytes) {
        return Err(if Parser::is_core_wasm(bytes) {
            "a core WebAssembly module, not a component: build for wasm32-wasip2, or wrap the module with `wasm-tools component new`".to_string()
        } else {
            "not a WebAssembly component (it does not start with a component's header)".to_string()
        });
    }
    let mut out = Interfaces::default();
    // Nested modules and components have imports of their own: only the
    // outermost component's are the plugin's.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("not a valid component: {e}"))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| format!("not a valid component: {e}"))?;
                    out.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| format!("not a valid component: {e}"))?;
                    out.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `wasmgate:plugin/kv@0.2.0` as (`kv`, `0.2.0`); `None` for another package.
fn plugin_interface(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PLUGIN_PACKAGE)?;
    Some(rest.split_once('@').unwrap_or((rest, "")))
}

impl Interfaces {
    /// The capabilities the component imports, in WIT order.
    pub fn capabilities(&self) -> Vec<&'static str> {
        crate::caps::all()
            .iter()
            .map(|c| c.name)
            .filter(|cap| {
                self.imports
                    .iter()
                    .any(|i| plugin_interface(i).is_some_and(|(iface, _)| iface == *cap))
            })
            .collect()
    }

    /// Refuses a component `manifest` does not describe, naming every
    /// problem at once: a `wasmgate:plugin` interface of another version
    /// than `wit_version`, a capability it imports that the grants withhold
    /// (it would not load), an interface this host does not offer, no
    /// `handler` export.
    pub fn check(&self, manifest: &Manifest) -> Result<(), String> {
        let mut problems = Vec::new();
        let wit = manifest.wit_version.to_string();
        for name in self.imports.iter().chain(&self.exports) {
            if let Some((_, version)) = plugin_interface(name)
                && version != wit
            {
                problems.push(format!(
                    "the component names `{name}` but the manifest's wit_version is {wit}"
                ));
            }
        }
        for name in &self.imports {
            let Some((iface, _)) = plugin_interface(name) else {
                continue;
            };
            match crate::caps::all().iter().find(|c| c.name == iface) {
                Some(cap) if (cap.granted)(&manifest.grants) => {}
                Some(cap) => problems.push(format!(
                    "the component imports `{name}` but the manifest's grants do not include it: add `{}: {}` to grants",
                    cap.name, cap.example
                )),
                None if iface == "types" => {}
                None => problems.push(format!(
                    "the component imports `{name}`, which this host does not offer"
                )),
            }
        }
        if !self
            .exports
            .iter()
            .any(|e| plugin_interface(e).is_some_and(|(iface, _)| iface == "handler"))
        {
            problems.push(format!(
                "the component does not export `{PLUGIN_PACKAGE}handler@{wit}`: it is no plugin"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(grants: &str, wit: &str) -> Manifest {
        serde_norway::from_str(&format!(
            "{{ name: p, version: 1.0.0, vendor: v, wit_version: {wit}, min_host_version: 0.1.0, grants: {grants} }}"
        ))
        .unwrap()
    }

    fn ifaces(imports: &[&str], exports: &[&str]) -> Interfaces {
        Interfaces {
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: exports.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn what_is_not_a_component_is_refused_with_what_it_is() {
        let e = interfaces(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(e.contains("core WebAssembly module"), "{e}");
        let e = interfaces(b"hello").unwrap_err();
        assert!(e.contains("not a WebAssembly component"), "{e}");
        let e = interfaces(b"\0asm\x0d\0\x01\0\x07\x05").unwrap_err();
        assert!(e.contains("not a valid component"), "{e}");
        assert_eq!(
            interfaces(b"\0asm\x0d\0\x01\0").unwrap(),
            Interfaces::default()
        );
    }

    #[test]
    fn the_manifest_must_grant_what_the_component_imports_at_its_wit_version() {
        let good = ifaces(
            &[
                "wasi:cli/stdout@0.2.6",
                "wasmgate:plugin/types@0.2.0",
                "wasmgate:plugin/kv@0.2.0",
                "wasmgate:plugin/log@0.2.0",
            ],
            &["wasmgate:plugin/handler@0.2.0"],
        );
        good.check(&manifest("{ kv: true, log: true }", "0.2.0"))
            .unwrap();
        assert_eq!(good.capabilities(), ["kv", "log"]);

        let e = good.check(&manifest("{ kv: true }", "0.2.0")).unwrap_err();
        assert!(
            e.contains("`wasmgate:plugin/log@0.2.0`") && e.contains("log: true"),
            "{e}"
        );
        let e = good
            .check(&manifest("{ kv: true, log: true }", "0.2.1"))
            .unwrap_err();
        assert_eq!(e.lines().count(), 4, "each name once: {e}");
        assert!(e.contains("wit_version is 0.2.1"), "{e}");

        let e = ifaces(&["wasmgate:plugin/disk@0.2.0"], &[])
            .check(&manifest("{}", "0.2.0"))
            .unwrap_err();
        assert!(e.contains("does not offer"), "{e}");
        assert!(
            e.contains("does not export `wasmgate:plugin/handler@0.2.0`"),
            "{e}"
        );
    }
}
