//! `wasmgate plugin ...` and `wasmgate reload`: installs, upgrades, rolls
//! back, removes and lists the plugins of a running server, or makes it
//! re-read its config, through its admin API (the token from its data
//! directory). Installing shows what the package is and the grants
//! it requests, and asks before approving them.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use http::{Method, StatusCode};

use crate::config::Config;
use crate::server::{APPROVE_HEADER, admin_call};

/// What `wasmgate plugin` does.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Install a plugin from a package (refused if one of that name is
    /// installed: use `upgrade`).
    Install(InstallArgs),
    /// Replace an installed plugin by the package's version.
    Upgrade(InstallArgs),
    /// Go back to an installed plugin's previous version.
    Rollback { name: String },
    /// Remove an installed plugin and its packages; its stored data too,
    /// unless --keep-data.
    Remove {
        name: String,
        #[arg(long)]
        keep_data: bool,
    },
    /// Every plugin of the server: state, source, version.
    List,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The package file (`wasmgate package build`).
    pub package: PathBuf,
    /// Approve the grants the package requests without asking.
    #[arg(long)]
    pub yes: bool,
    /// Allow a version older than the installed one.
    #[arg(long)]
    pub force: bool,
}

/// Where the running server is: its config (for the admin address and the
/// data directory with the token), or an explicit admin address.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Default: ./config.yaml, else ./wasmgate.yaml.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Where the admin token is (the server's `--data-dir`, if it had one).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The admin listener's address, when the config's is not the one bound.
    #[arg(long, global = true)]
    pub admin: Option<String>,
}

/// A connection to the server's admin API.
struct Admin {
    addr: String,
    token: String,
}

impl Admin {
    fn new(config: &Config, admin: Option<String>) -> anyhow::Result<Admin> {
        let path = config.data_dir.join("admin.token");
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the admin token {}", path.display()))?;
        Ok(Admin {
            addr: admin.unwrap_or_else(|| config.admin.listen.clone()),
            token: token.trim().to_string(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        admin_call(&self.addr, &self.token, method, path, headers, body).await
    }
}

/// Runs `action` against the server `config` describes; whether it was
/// done (a refusal is printed and is `false`).
pub async fn run(action: Action, config: &Config, admin: Option<String>) -> anyhow::Result<bool> {
    let admin = Admin::new(config, admin)?;
    match action {
        Action::Install(args) => install(&admin, args, false).await,
        Action::Upgrade(args) => install(&admin, args, true).await,
        Action::Rollback { name } => {
            let path = format!("/plugins/{name}/rollback");
            report(admin.call(Method::POST, &path, &[], Vec::new()).await?)
        }
        Action::Remove { name, keep_data } => {
            let path = format!("/plugins/{name}?keep_data={keep_data}");
            report(admin.call(Method::DELETE, &path, &[], Vec::new()).await?)
        }
        Action::List => list(&admin).await,
    }
}

/// `wasmgate reload`: the server re-reads its config file (as on SIGHUP);
/// whether it applied it.
pub async fn reload(config: &Config, admin: Option<String>) -> anyhow::Result<bool> {
    let admin = Admin::new(config, admin)?;
    report(admin.call(Method::POST, "/reload", &[], Vec::new()).await?)
}

/// Prints a reload's summary, or its refusal.
fn report((status, body): (StatusCode, serde_json::Value)) -> anyhow::Result<bool> {
    if status.is_success() {
        for line in body["summary"].as_array().into_iter().flatten() {
            println!("{}", line.as_str().unwrap_or_default());
        }
        Ok(true)
    } else {
        let error = body["error"].as_str().unwrap_or("no reason given");
        eprintln!("error: refused ({status}); nothing changed: {error}");
        Ok(false)
    }
}

async fn install(admin: &Admin, args: InstallArgs, upgrade: bool) -> anyhow::Result<bool> {
    let package = crate::package::load(&args.package)?;
    let m = package.manifest();
    let name = &m.name;
    let (status, versions) = admin
        .call(
            Method::GET,
            &format!("/plugins/{name}/versions"),
            &[],
            Vec::new(),
        )
        .await?;
    let installed = status.is_success() && versions["source"] == "package";
    if status.is_success() && versions["source"] == "config" {
        eprintln!(
            "error: plugin `{name}` is defined in the server's config file, which takes precedence: remove it there first"
        );
        return Ok(false);
    }
    if upgrade && !installed {
        eprintln!("error: plugin `{name}` is not installed: use `wasmgate plugin install`");
        return Ok(false);
    }
    if !upgrade && installed {
        eprintln!(
            "error: plugin `{name}` is installed (version {}): use `wasmgate plugin upgrade`",
            versions["current"].as_str().unwrap_or("?")
        );
        return Ok(false);
    }
    println!("plugin {name} {} by {}", m.version, m.vendor);
    match package.signature() {
        Some(sig) => println!("signed by {}", sig.key),
        None => println!("not signed"),
    }
    println!("requests these grants:");
    for line in m.grants_yaml().trim_end().lines() {
        println!("  {line}");
    }
    if !args.yes && !confirm("approve them and install?")? {
        eprintln!("not installed");
        return Ok(false);
    }
    let approved = serde_json::to_string(&m.grants)?;
    let path = format!("/plugins/{name}?force={}", args.force);
    let answer = admin
        .call(
            Method::PUT,
            &path,
            &[(APPROVE_HEADER, approved)],
            package.to_bytes(),
        )
        .await?;
    report(answer)
}

/// Asks `question` on the terminal; `false` unless the answer is yes. Off a
/// terminal, an error that says to pass `--yes`.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("not asking without a terminal: pass --yes to approve the grants above");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn list(admin: &Admin) -> anyhow::Result<bool> {
    let (status, body) = admin.call(Method::GET, "/plugins", &[], Vec::new()).await?;
    if !status.is_success() {
        return report((status, body));
    }
    println!(
        "{:<24} {:<9} {:<8} {:<12} sha256",
        "name", "state", "source", "version"
    );
    for p in body["plugins"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?");
        let source = p["source"].as_str().unwrap_or("?");
        let version = p["version"].as_str().unwrap_or("-");
        let sha = p["sha256"].as_str().map_or("-", |s| &s[..12.min(s.len())]);
        println!(
            "{name:<24} {:<9} {source:<8} {version:<12} {sha}",
            p["state"].as_str().unwrap_or("?")
        );
    }
    Ok(true)
}
