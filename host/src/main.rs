//! The `wasmgate` command line: parse flags, run, map errors to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
#[cfg(feature = "bench")]
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wasmgate::config::Config;
use wasmgate::server::{self, Host};

#[derive(Parser)]
#[command(
    name = "wasmgate",
    version,
    about = "An HTTP API server whose business logic runs in sandboxed WebAssembly component plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines on stderr look: `text` (coloured only on a terminal) or
    /// `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every plugin in the config until SIGINT or SIGTERM.
    Serve {
        /// Default: ./config.yaml, else ./wasmgate.yaml (a `wasmgate new` project).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides the config's `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Start a new database in place of an empty (0-byte) database file,
        /// which is otherwise refused as damaged.
        #[arg(long)]
        accept_empty_database: bool,
        /// Exit when a plugin fails to load, instead of serving the others
        /// and answering 503 on its routes.
        #[arg(long)]
        strict: bool,
        /// Benchmarks only (`--features bench`): an extra listener answering natively.
        #[cfg(feature = "bench")]
        #[arg(long, hide = true)]
        bench_native: Option<String>,
    },
    /// Start a plugin project in DIR (default: ./NAME) that builds anywhere:
    /// the WIT files (and for Rust the SDK) come from this binary.
    New {
        /// The plugin's name: 1 to 32 of a-z, 0-9, _ and -, starting with a letter.
        name: String,
        #[arg(long, value_enum)]
        lang: wasmgate::authoring::new::Lang,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the project in DIR with its config's `dev.build`, serve it, and
    /// rebuild and swap the plugin in on every change to `dev.watch`.
    Dev {
        /// The project directory (its config.yaml or wasmgate.yaml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The config file, in place of DIR's.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make a running server re-read its config file and apply what changed
    /// (as SIGHUP does); prints the changes. Exits 2 when the server refuses
    /// the config (it then changes nothing).
    Reload {
        #[command(flatten)]
        target: wasmgate::remote::Target,
    },
    /// Install, upgrade, roll back, remove or list a running server's
    /// plugins (packages from `wasmgate package build`). Exits 2 when the
    /// server refuses (it then changed nothing).
    Plugin {
        #[command(subcommand)]
        action: wasmgate::remote::Action,
        #[command(flatten)]
        target: wasmgate::remote::Target,
    },
    /// Check or back up the database (the server must be stopped).
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Validate the config, load and link every plugin, print a table.
    Check {
        /// Default: ./config.yaml, else ./wasmgate.yaml (a `wasmgate new` project).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Call one plugin in-process, without opening any port. Exits 3 when
    /// the answer's status is 400 or more.
    Call {
        /// The plugin's name in the config.
        plugin: String,
        /// GET, POST, ... (case-sensitive, as on the wire).
        #[arg(value_parser = http_method)]
        method: String,
        /// The path a client would send, with the mount prefix (`/hello/notes`
        /// for a mount at `/hello/`) and an optional query string. With
        /// `--admin`, the path below the plugin's admin surface (`/stats`).
        #[arg(value_parser = request_path)]
        path: String,
        /// The body: JSON text, or @FILE to read it from a file.
        #[arg(long)]
        body: Option<String>,
        /// A header, 'name: value'; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Call the plugin's admin export instead of its handler.
        #[arg(long)]
        admin: bool,
        /// Default: ./config.yaml, else ./wasmgate.yaml (a `wasmgate new` project).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write the WIT package with the world `plugin` importing only the
    /// named capabilities (or a config's grants), for Python and JavaScript builds.
    Wit(wasmgate::authoring::wit::Args),
    /// Make, sign, inspect and verify plugin packages: a manifest, a
    /// component and a vendor's signature in one file (docs/package.md).
    Package(wasmgate::package::cli::Args),
    /// Precompile a config's plugins for a target (this machine, another
    /// architecture, or Pulley) into signed artefacts (`<plugin>.aot`) that
    /// a host, including one built without the compiler, loads as they are.
    #[cfg(feature = "compiler")]
    Compile(wasmgate::aot::compile::Args),
    /// Write what a router image needs: the config, every plugin
    /// precompiled for the target and signed, and the packages given
    /// (docs/routers.md).
    #[cfg(feature = "compiler")]
    Bundle(wasmgate::aot::bundle::Args),
    #[cfg(feature = "bench")]
    /// Benchmarks only: fresh instance + call + drop, averaged.
    #[command(hide = true)]
    BenchInstantiate {
        /// Default: ./config.yaml, else ./wasmgate.yaml (a `wasmgate new` project).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        plugin: String,
        #[arg(long, default_value_t = 10_000)]
        iterations: u32,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Exit code for a config the host refuses.
const EXIT_CONFIG: u8 = 2;
/// Exit code of `call` when the answer's status is 400 or more.
const EXIT_HTTP_ERROR: u8 = 3;

/// A method as `call` sends it: one token (RFC 9110), in upper case.
fn http_method(s: &str) -> Result<String, String> {
    const TOKEN_PUNCTUATION: &[u8] = b"!#$%&'*+-.^_`|~";
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.contains(&b))
    {
        return Err(format!(
            "`{s}` is not an HTTP method: one word, such as GET, POST, PUT or DELETE"
        ));
    }
    if s.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "methods are case-sensitive: did you mean {}?",
            s.to_ascii_uppercase()
        ));
    }
    Ok(s.to_string())
}

/// A request path as `call` sends it: absolute, with an optional query.
fn request_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "`{s}` does not start with `/`: give the path a client sends, mount prefix included (e.g. /hello/notes)"
        ));
    }
    match s.parse::<http::uri::PathAndQuery>() {
        Ok(_) => Ok(s.to_string()),
        Err(e) => Err(format!(
            "`{s}` is not a valid request path ({e}): percent-encode spaces and other special characters"
        )),
    }
}

fn main() -> ExitCode {
    wasmgate::util::fs::restrict_umask();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if refused(&e) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Crates whose `debug` and `trace` lines are the compiler's and the
/// engine's internals (tens of thousands of lines per component compiled):
/// held at `warn` unless `RUST_LOG` names them.
const INTERNALS: &[&str] = &["cranelift", "wasmtime", "regalloc2", "wasmparser", "pulley"];

/// Logs to stderr at `RUST_LOG`'s levels (default `info`), in `format`,
/// with colours only when stderr is a terminal and `NO_COLOR` is unset.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    // `level` and `target=level` directives, comma-separated (no regex
    // engine in the binary for span or field filters).
    let mut filter: Targets = match (if spec.is_empty() { "info" } else { &spec }).parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: RUST_LOG=`{spec}` is not a valid filter ({e}); using `info`");
            "info".parse().expect("a valid filter")
        }
    };
    for krate in INTERNALS.iter().filter(|k| !spec.contains(**k)) {
        filter = filter.with_target(*krate, tracing::Level::WARN);
    }
    // Records of the `log` crate (wasmtime writes trace records on every
    // instantiation) reach the filter only through `log`'s own global
    // level: held at the most verbose level any directive enables, they
    // cost nothing when nothing would print them.
    let most = filter
        .iter()
        .map(|(_, level)| level)
        .chain(filter.default_level())
        .max()
        .unwrap_or(tracing::level_filters::LevelFilter::OFF);
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.finish().with(filter).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(filter)
            .init(),
    }
    log::set_max_level(match most.into_level() {
        None => log::LevelFilter::Off,
        Some(tracing::Level::ERROR) => log::LevelFilter::Error,
        Some(tracing::Level::WARN) => log::LevelFilter::Warn,
        Some(tracing::Level::INFO) => log::LevelFilter::Info,
        Some(tracing::Level::DEBUG) => log::LevelFilter::Debug,
        Some(tracing::Level::TRACE) => log::LevelFilter::Trace,
    });
}

/// Whether `e` says the input must change: a config the host refuses, a
/// plugin it names that the host cannot load, or a package, manifest or
/// key file the host refuses.
fn refused(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<wasmgate::config::ConfigError>() || c.is::<wasmgate::runtime::LoadError>())
        || wasmgate::package::cli::refused(e)
}

/// A directory's config: its `config.yaml`, else its `wasmgate.yaml` (what
/// `wasmgate new` writes), else `config.yaml` (for the error).
fn project_config(dir: &Path) -> PathBuf {
    ["config.yaml", "wasmgate.yaml"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join("config.yaml"))
}

/// Loads `path`, or without one the current directory's config (see
/// [`project_config`]).
fn load_config(path: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let path = path.unwrap_or_else(|| project_config(Path::new(".")));
    let mut config = Config::load(&path)?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

#[derive(Subcommand)]
enum DbCommand {
    /// Check every page and row of the database; exits non-zero if it is damaged.
    Check {
        /// Default: ./config.yaml, else ./wasmgate.yaml (a `wasmgate new` project).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Copy the database into a new file, consistently (a running server
    /// does the same on `POST /backup` of its admin listener).
    Backup {
        /// The new file; an existing one is never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Default: ./config.yaml, else ./wasmgate.yaml (a `wasmgate new` project).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn tokio() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            accept_empty_database,
            strict,
            #[cfg(feature = "bench")]
            bench_native,
        } => {
            let path = config.unwrap_or_else(|| project_config(Path::new(".")));
            let config = load_config(Some(path.clone()), data_dir)?;
            #[cfg(not(feature = "bench"))]
            let bench_native: Option<String> = None;
            let on_error = if strict {
                server::OnLoadError::Stop
            } else {
                server::OnLoadError::Report
            };
            tokio()?.block_on(async {
                let mut host = Host::load(config, None, accept_empty_database, on_error)?;
                host.config_path = Some(path);
                host.bind(bench_native.as_deref()).await?.serve().await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { action, target } => {
            let config = load_config(target.config, target.data_dir)?;
            let done = tokio()?.block_on(wasmgate::remote::run(action, &config, target.admin))?;
            Ok(if done {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CONFIG)
            })
        }
        Command::Reload { target } => {
            let config = load_config(target.config, target.data_dir)?;
            let done = tokio()?.block_on(wasmgate::remote::reload(&config, target.admin))?;
            Ok(if done {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CONFIG)
            })
        }
        Command::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let created = wasmgate::authoring::new::new_project(&name, lang, &dir)?;
            println!(
                "created {} ({} plugin `{name}`); next:",
                created.dir.display(),
                lang.name()
            );
            for step in &created.next {
                println!("  {step}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev { dir, config } => {
            let path = config.unwrap_or_else(|| project_config(&dir));
            let loaded = load_config(Some(path.clone()), None)?;
            tokio()?.block_on(wasmgate::dev::run(&path, loaded))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Db {
            command: DbCommand::Check { config, data_dir },
        } => {
            let config = load_config(config, data_dir)?;
            let path = config.data_dir.join(wasmgate::db::FILE);
            if wasmgate::db::check_file(&path)? {
                println!("{}: ok", path.display());
            } else {
                println!("{}: was inconsistent and has been repaired", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Db {
            command:
                DbCommand::Backup {
                    out,
                    config,
                    data_dir,
                },
        } => {
            let config = load_config(config, data_dir)?;
            let db = wasmgate::db::Db::open(
                &config.data_dir,
                false,
                config.memory.storage_cache_bytes(),
            )?;
            db.backup(&out)
                .with_context(|| format!("cannot back up into {}", out.display()))?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let config = load_config(config, None)?;
            let rows = tokio()?.block_on(async { server::check_rows(&config) })?;
            // Each error once, in full, on stderr; the table only points at it.
            let table: Vec<[String; 5]> = rows
                .iter()
                .map(|r| {
                    let [a, b, c, d] = r.columns.clone();
                    let status = match &r.status {
                        Ok(s) => s.clone(),
                        Err(_) => "refused (see below)".into(),
                    };
                    [a, b, c, d, status]
                })
                .collect();
            print_table(&["plugin", "wasm", "mounts", "grants", "status"], &table);
            std::io::Write::flush(&mut std::io::stdout())?;
            let mut ok = true;
            for e in rows.iter().filter_map(|r| r.status.as_ref().err()) {
                eprintln!("error: {e:#}");
                ok = false;
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CONFIG)
            })
        }
        Command::Call {
            plugin,
            method,
            path,
            body,
            headers,
            admin,
            config,
            data_dir,
        } => {
            let config = load_config(config, data_dir)?;
            let body = match body {
                None => Vec::new(),
                Some(b) => match b.strip_prefix('@') {
                    Some(file) => {
                        std::fs::read(file).with_context(|| format!("cannot read {file}"))?
                    }
                    None => b.into_bytes(),
                },
            };
            let mut header_pairs = Vec::new();
            for h in headers {
                let (k, v) = h
                    .split_once(':')
                    .with_context(|| format!("header `{h}` is not 'name: value'"))?;
                header_pairs.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            if !body.is_empty() && !header_pairs.iter().any(|(k, _)| k == "content-type") {
                header_pairs.push(("content-type".into(), "application/json".into()));
            }
            let status = tokio()?.block_on(async {
                let host = Host::load(config, Some(&plugin), false, server::OnLoadError::Stop)?;
                let p = host.plugin(&plugin).context("plugin not loaded")?;
                let (prefix, path) = if admin {
                    let prefix = format!("/plugins/{plugin}/admin");
                    let path = format!("{prefix}{path}");
                    (prefix, path)
                } else {
                    let mounts: Vec<&str> =
                        p.config.mounts.iter().map(|m| m.prefix.as_str()).collect();
                    if mounts.is_empty() {
                        anyhow::bail!(
                            "plugin `{plugin}` has no mounts, so no client can reach its handler; call its admin export with --admin"
                        );
                    }
                    let prefix = server::prefix_for(&p, &path).with_context(|| {
                        format!(
                            "`{path}` is under none of plugin `{plugin}`'s mounts ({}): PATH is the path a client sends, mount prefix included",
                            mounts.join(", ")
                        )
                    })?;
                    (prefix, path)
                };
                let req = server::local_request(&method, &path, header_pairs, body, prefix);
                let id = req.request_id.clone();
                let result = if admin {
                    p.admin(req).await
                } else {
                    p.handle(req).await
                };
                let (status, headers, body) = match result {
                    Ok(r) => (r.status, r.headers, r.body),
                    Err(e) => {
                        let (status, body) = server::call_error_body(&e, &id);
                        let headers =
                            vec![("content-type".to_string(), "application/json".to_string())];
                        (status.as_u16(), headers, body.to_string().into_bytes())
                    }
                };
                println!("HTTP {status}");
                for (k, v) in &headers {
                    println!("{k}: {v}");
                }
                println!();
                println!("{}", String::from_utf8_lossy(&body));
                anyhow::Ok(status)
            })?;
            Ok(if status >= 400 {
                ExitCode::from(EXIT_HTTP_ERROR)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Wit(args) => {
            args.run()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Package(args) => {
            args.run()?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "compiler")]
        Command::Compile(args) => {
            args.run()?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "compiler")]
        Command::Bundle(args) => {
            args.run()?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "bench")]
        Command::BenchInstantiate {
            config,
            plugin,
            iterations,
            path,
            data_dir,
        } => {
            let mut config = load_config(config, data_dir)?;
            if config.data_dir.join("wasmgate.redb").exists() {
                config.data_dir =
                    std::env::temp_dir().join(format!("wasmgate-bench-{}", std::process::id()));
            }
            tokio()?.block_on(async {
                let host = Host::load(
                    config.clone(),
                    Some(&plugin),
                    false,
                    server::OnLoadError::Stop,
                )?;
                let p = host.plugin(&plugin).context("plugin not loaded")?;
                let prefix = server::prefix_for(&p, &path)
                    .context("the path is under none of the plugin's mounts")?;
                let mut inst = Duration::ZERO;
                let mut call = Duration::ZERO;
                let warmup = (iterations / 10).max(1);
                let started = Instant::now();
                for i in 0..warmup + iterations {
                    let req = server::local_request("GET", &path, vec![], vec![], prefix.clone());
                    let (a, b) = p
                        .bench_once(req)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    if i >= warmup {
                        inst += a;
                        call += b;
                    }
                }
                let n = iterations as f64;
                let total = started.elapsed();
                println!(
                    "{}",
                    serde_json::json!({
                        "iterations": iterations,
                        "instantiate_us": inst.as_secs_f64() * 1e6 / n,
                        "call_us": call.as_secs_f64() * 1e6 / n,
                        "total_us": total.as_secs_f64() * 1e6 / (n + warmup as f64),
                        "allocator": if host.runtime.pooling { "pooling" } else { "on_demand" },
                    })
                );
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
