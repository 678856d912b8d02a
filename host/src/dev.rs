//! `wasmgate dev`: the plugin author's loop. Builds the project with the
//! config's `dev.build` command, serves the config, and on every change under
//! `dev.watch` builds again and swaps each plugin whose component changed,
//! without a restart, through the same reload as `SIGHUP`
//! ([`crate::server::live`]): requests already running finish on the old
//! version, new ones get the new one. A failed build or a component that
//! does not load leaves the last good version serving. The config file is
//! re-read with each reload, so its changes apply too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use crate::config::{Config, DevConfig};
use crate::server::live::ReloadError;
use crate::server::{Host, OnLoadError, Reload};

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
    let mut host = Host::load(config, None, false, OnLoadError::Stop)?;
    host.config_path = Some(config_path.to_path_buf());
    let bound = host.bind(None).await?;
    let host = bound.host();
    let server = tokio::spawn(bound.serve());
    let watcher = async {
        loop {
            seen = wait_for_change(&watch, seen).await;
            match build(&dev, &dir).await {
                Ok(true) => swap(&host).await,
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

/// Reloads after a build: every plugin whose component (or config) changed
/// is swapped in.
async fn swap(host: &Arc<Host>) {
    let started = Instant::now();
    match host.reload(Reload::File).await {
        Ok(changes) => {
            let secs = started.elapsed().as_secs_f64();
            for name in changes.changed.keys() {
                eprintln!("dev: plugin `{name}` swapped in {secs:.2} s");
            }
            if changes.is_empty() {
                eprintln!("dev: no component changed");
            }
        }
        Err(ReloadError::Load { plugin, error }) => eprintln!(
            "dev: plugin `{plugin}` did not load; the last good version keeps serving: {error:#}"
        ),
        Err(e) => eprintln!("dev: reload refused; the last good version keeps serving: {e}"),
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
