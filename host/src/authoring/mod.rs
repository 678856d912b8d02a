//! What plugin authors run besides the server: `wasmgate wit` ([`wit`]),
//! the WIT package cut to one plugin's grants for toolchains that import a
//! whole world (componentize-py, componentize-js).

pub mod wit;
