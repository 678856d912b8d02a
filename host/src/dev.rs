//! `wasmgate dev`: the plugin author's loop. Builds the project with the
//! config's `dev.build` command, serves the config, and on every change under
//! `dev.watch` builds again and swaps each plugin whose component changed,
//! without a restart: requests already running finish on the old version,
//! new ones get the new one ([`crate::runtime::Loaded`]). A failed build or
//! a component that does not load leaves the last good version serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use ring::digest;

use crate::config::{Config, DevConfig};
use crate::runtime::Cache;
use crate::server::Host;

/// How often the watched paths are looked at. Polling sizes and times of a
/// project's few files costs little, works on every filesystem (network
/// mounts and containers' bind mounts included, where inotify may not), and
/// adds no dependency to the production binary for a development loop.
const POLL: Duration = Duration::from_millis(250);
/// How long the watched paths must stay unchanged before a build starts (an
/// editor's save is often several writes).
const SETTLE: Duration = Duration::from_millis(200);
/// Directories never watched: build output, dependencies, version control.
const SKIP: &[&str] = &["target", "node_modules", ".git", "__pycache__", "data"];

/// Builds, serves and rebuilds until SIGINT or SIGTERM. `config_path` is
/// the config file; the build runs in its directory.
pub async fn run(config_path: &Path, config: Config) -> anyhow::Result<()> {
    let dev = config.dev.clone().with_context(|| {
        format!(
            "{} has no `dev:` section: add one like `dev: {{ build: \"cargo build --release --target wasm32-wasip2\", watch: [src] }}`",
            config_path.display()
        )
    })?;
    let dir = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let watch = if dev.watch.is_empty() {
        vec![dir.clone()]
    } else {
        dev.watch.clone()
    };
    eprintln!(
        "dev: build `{}` in {}; watching {}",
        dev.build,
        dir.display(),
        watch
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The first build must succeed before there is anything to serve.
    let mut seen = fingerprint(&watch);
    while !build(&dev, &dir).await? {
        eprintln!("dev: waiting for a change to build again");
        seen = wait_for_change(&watch, seen).await;
    }
    let host = Host::load(config, None, false)?;
    let cache = Cache::open(&host.config.data_dir)?;
    let mut hashes: Vec<Option<Vec<u8>>> = host
        .plugins
        .iter()
        .map(|l| file_hash(&l.get().config.wasm))
        .collect();
    let bound = host.bind(None).await?;
    let host = bound.host();
    let server = tokio::spawn(bound.serve());
    let watcher = async {
        loop {
            seen = wait_for_change(&watch, seen).await;
            match build(&dev, &dir).await {
                Ok(true) => swap_changed(&host, &cache, &mut hashes).await,
                Ok(false) => eprintln!("dev: build failed; the last good version keeps serving"),
                Err(e) => eprintln!("dev: cannot run the build: {e:#}"),
            }
        }
    };
    tokio::select! {
        r = server => r.context("the server task failed")?,
        () = watcher => Ok(()),
    }
}

/// Swaps in every plugin whose component file changed since it was loaded.
async fn swap_changed(host: &Arc<Host>, cache: &Cache, hashes: &mut [Option<Vec<u8>>]) {
    for (loaded, hash) in host.plugins.iter().zip(hashes.iter_mut()) {
        let old = loaded.get();
        let now = file_hash(&old.config.wasm);
        if now.is_none() || now == *hash {
            continue;
        }
        let started = Instant::now();
        // Compiling takes a while: off the request threads.
        let result = tokio::task::block_in_place(|| host.runtime.reload(&old, cache));
        match result {
            Ok(new) => {
                loaded.swap(new);
                *hash = now;
                eprintln!(
                    "dev: plugin `{}` swapped in {:.2} s",
                    loaded.name,
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => eprintln!(
                "dev: plugin `{}` did not load; the last good version keeps serving: {e:#}",
                loaded.name
            ),
        }
    }
}

/// Runs the build command with its output on the terminal; whether it
/// succeeded. `WASMGATE` names this binary, so that a build that calls
/// `wasmgate wit` (the Python and JavaScript projects' `build.sh`) writes the
/// WIT of the host that will load the result.
async fn build(dev: &DevConfig, dir: &Path) -> anyhow::Result<bool> {
    eprintln!("dev: building: {}", dev.build);
    let started = Instant::now();
    let mut command = tokio::process::Command::new("sh");
    if let Ok(exe) = std::env::current_exe() {
        command.env("WASMGATE", exe);
    }
    let status = command
        .arg("-c")
        .arg(&dev.build)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("cannot run `sh -c {}`", dev.build))?;
    if status.success() {
        eprintln!("dev: built in {:.2} s", started.elapsed().as_secs_f64());
    } else {
        eprintln!("dev: the build exited with {status}");
    }
    Ok(status.success())
}

/// What the watched paths look like: every file's path, size and
/// modification time, in order.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, u64, Option<SystemTime>)>) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            let Ok(entries) = std::fs::read_dir(p) else {
                return;
            };
            let mut children: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|c| c.file_name().is_none_or(|n| !SKIP.iter().any(|s| n == *s)))
                .collect();
            children.sort();
            for c in children {
                walk(&c, out);
            }
        } else {
            out.push((p.to_path_buf(), meta.len(), meta.modified().ok()));
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

/// Waits until the watched paths differ from `seen` and then stay the same
/// for [`SETTLE`]; returns how they look then.
async fn wait_for_change(
    paths: &[PathBuf],
    seen: Vec<(PathBuf, u64, Option<SystemTime>)>,
) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    loop {
        tokio::time::sleep(POLL).await;
        let now = fingerprint(paths);
        if now == seen {
            continue;
        }
        let mut last = now;
        loop {
            tokio::time::sleep(SETTLE).await;
            let again = fingerprint(paths);
            if again == last {
                return again;
            }
            last = again;
        }
    }
}

fn file_hash(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    Some(digest::digest(&digest::SHA256, &bytes).as_ref().to_vec())
}
