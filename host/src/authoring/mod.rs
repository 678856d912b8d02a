//! What plugin authors run besides the server: `wasmgate new` ([`new`]), a
//! plugin project that builds anywhere, and `wasmgate wit` ([`wit`]), the WIT
//! package cut to one plugin's grants for toolchains that import a whole
//! world (componentize-py, componentize-js).

pub mod new;
pub mod wit;
