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
}

#[derive(Subcommand)]
enum Command {
    /// Serve every plugin in the config until SIGINT or SIGTERM.
    Serve {
        #[arg(long, default_value = "config.yaml")]
        config: PathBuf,
        /// Overrides the config's `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Start a new database in place of an empty (0-byte) database file,
        /// which is otherwise refused as damaged.
        #[arg(long)]
        accept_empty_database: bool,
        /// Benchmarks only (`--features bench`): an extra listener answering natively.
        #[cfg(feature = "bench")]
        #[arg(long, hide = true)]
        bench_native: Option<String>,
    },
    /// Check or back up the database (the server must be stopped).
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Validate the config, load and link every plugin, print a table.
    Check {
        #[arg(long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Call one plugin in-process, without opening any port.
    Call {
        /// The plugin's name in the config.
        plugin: String,
        /// GET, POST, ...
        method: String,
        /// The request path, with an optional query string.
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
        #[arg(long, default_value = "config.yaml")]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write the WIT package with the world `plugin` importing only the
    /// named capabilities (or a config's grants), for Python and JavaScript builds.
    Wit(wasmgate::authoring::wit::Args),
    #[cfg(feature = "bench")]
    /// Benchmarks only: fresh instance + call + drop, averaged.
    #[command(hide = true)]
    BenchInstantiate {
        #[arg(long, default_value = "config.yaml")]
        config: PathBuf,
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

fn main() -> ExitCode {
    wasmgate::util::fs::restrict_umask();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<wasmgate::config::ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load_config(path: &Path, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut config = Config::load(path)?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

#[derive(Subcommand)]
enum DbCommand {
    /// Check every page and row of the database; exits non-zero if it is damaged.
    Check {
        #[arg(long, default_value = "config.yaml")]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Copy the database into a new file, consistently (a running server
    /// does the same on `POST /backup` of its admin listener).
    Backup {
        /// The new file; an existing one is never overwritten.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "config.yaml")]
        config: PathBuf,
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
            #[cfg(feature = "bench")]
            bench_native,
        } => {
            let config = load_config(&config, data_dir)?;
            #[cfg(not(feature = "bench"))]
            let bench_native: Option<String> = None;
            tokio()?.block_on(async {
                let host = Host::load(config, None, accept_empty_database)?;
                host.bind(bench_native.as_deref()).await?.serve().await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Db {
            command: DbCommand::Check { config, data_dir },
        } => {
            let config = load_config(&config, data_dir)?;
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
            let config = load_config(&config, data_dir)?;
            let db = wasmgate::db::Db::open(&config.data_dir, false)?;
            db.backup(&out)
                .with_context(|| format!("cannot back up into {}", out.display()))?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let config = load_config(&config, None)?;
            let (rows, ok) = tokio()?.block_on(async { server::check_rows(&config) });
            print_table(&["plugin", "wasm", "mounts", "grants", "status"], &rows);
            for row in rows.iter().filter(|r| r[4].starts_with("error: ")) {
                eprintln!("{}", row[4]);
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
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
            let config = load_config(&config, data_dir)?;
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
            tokio()?.block_on(async {
                let host = Host::load(config, Some(&plugin), false)?;
                let p = host.plugin(&plugin).context("plugin not loaded")?;
                let prefix = if admin {
                    format!("/plugins/{plugin}/admin")
                } else {
                    server::prefix_for(p, &path)
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
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Wit(args) => {
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
            let mut config = load_config(&config, data_dir)?;
            if config.data_dir.join("wasmgate.redb").exists() {
                config.data_dir =
                    std::env::temp_dir().join(format!("wasmgate-bench-{}", std::process::id()));
            }
            tokio()?.block_on(async {
                let host = Host::load(config.clone(), Some(&plugin), false)?;
                let p = host.plugin(&plugin).context("plugin not loaded")?;
                let prefix = server::prefix_for(p, &path);
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
