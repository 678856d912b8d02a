//! Runs the real `wasmgate` binary for a test.
//!
//! A test describes its plugins with [`Plugin`], turns them into a
//! [`Setup`] (a temp dir holding `config.yaml` and the data dir) and either
//! drives the CLI from it (`check`, `call`) or serves it: [`Server`] starts
//! `wasmgate serve` on port 0, waits for `ready`, learns the bound addresses
//! from stdout and stops the process on drop (SIGTERM, then SIGKILL).

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::e2e::http::{self, Conn, Response};

pub const BIN: &str = env!("CARGO_BIN_EXE_wasmgate");

/// How long a server may take to print `ready` (the first start compiles
/// the components; two tests compile at once on a small machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a one-shot CLI command (`check`, `call`, a failing `serve`) may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM may take before the harness sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The path of a plugin built by `make test` (`hello` or `fixture`).
pub fn wasm(name: &str) -> PathBuf {
    in_target(&Path::new("wasm32-wasip2/release").join(format!("{name}.wasm")))
}

/// A component that `make build` writes to `target/` itself rather than
/// cargo (`hello-py`, `hello-js`: built with componentize-py and
/// componentize-js).
pub fn built_wasm(name: &str) -> PathBuf {
    in_target(Path::new(&format!("{name}.wasm")))
}

/// `file` under the test binary's own target dir (it honours
/// CARGO_TARGET_DIR), else under the workspace's.
fn in_target(file: &Path) -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(target) = Path::new(BIN).parent().and_then(Path::parent) {
        candidates.push(target.join(file));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(file),
    );
    for candidate in &candidates {
        if candidate.is_file() {
            return candidate
                .canonicalize()
                .unwrap_or_else(|_| candidate.clone());
        }
    }
    panic!(
        "{} not found: build the plugins first: make test",
        candidates[0].display()
    );
}

fn is_script_plugin(wasm: &Path) -> bool {
    [Lang::Python, Lang::Js]
        .iter()
        .any(|l| *wasm == l.hello_wasm())
}

/// Compiling hello-py (18 MB) or hello-js (12 MB) takes seconds each on a
/// small machine. A setup serving one starts from the host's own cache
/// (sealed artefacts and their key), compiled once per test run, as a host
/// restarted on the same data directory would.
fn seed_cache(data_dir: &Path) {
    static WARM: OnceLock<PathBuf> = OnceLock::new();
    let warm = WARM.get_or_init(|| {
        let plugins = [
            Plugin::hello_in(Lang::Python, "py"),
            Plugin::hello_in(Lang::Js, "js"),
        ];
        let setup = Setup::with_yaml(&config_yaml(&plugins));
        let out = setup.check();
        assert!(
            out.status.success(),
            "warming the cache: {}",
            describe(&out)
        );
        let data_dir = setup.data_dir.clone();
        // Kept for the whole test run.
        std::mem::forget(setup);
        data_dir
    });
    std::fs::create_dir_all(data_dir.join("cache")).expect("cache dir");
    std::fs::copy(warm.join("cache.key"), data_dir.join("cache.key")).expect("copy cache.key");
    for entry in std::fs::read_dir(warm.join("cache")).expect("warm cache") {
        let entry = entry.expect("cache entry");
        std::fs::copy(entry.path(), data_dir.join("cache").join(entry.file_name()))
            .expect("copy a cached component");
    }
}

/// A language the hello example is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// examples/hello
    Rust,
    /// examples/hello-py
    Python,
    /// examples/hello-js
    Js,
}

impl Lang {
    /// The hello example's component in this language.
    pub fn hello_wasm(self) -> PathBuf {
        match self {
            Lang::Rust => wasm("hello"),
            Lang::Python => built_wasm("hello-py"),
            Lang::Js => built_wasm("hello-js"),
        }
    }
}

/// Resource limits of one plugin, written out in full so that a test never
/// depends on the host's defaults by accident.
#[derive(Clone, Debug)]
pub struct Limits {
    pub memory_mb: u64,
    pub timeout_ms: u64,
    pub max_body_bytes: u64,
    pub max_response_bytes: u64,
    /// More `limits:` keys, as YAML flow-mapping entries after a comma.
    pub extra: String,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 32,
            timeout_ms: 2000,
            max_body_bytes: 1_048_576,
            max_response_bytes: 4_194_304,
            extra: String::new(),
        }
    }
}

/// One `plugins:` entry of config.yaml, mounted once.
#[derive(Clone, Debug)]
pub struct Plugin {
    pub name: String,
    pub wasm: PathBuf,
    pub listen: String,
    pub prefix: String,
    /// A YAML flow mapping, e.g. `{ kv: true }`.
    pub grants: String,
    pub limits: Limits,
    /// A YAML flow mapping, or empty for no `settings:` key.
    pub settings: String,
}

impl Plugin {
    /// The hello example mounted at `/<name>/` with the grants it needs.
    pub fn hello(name: &str) -> Plugin {
        Plugin::hello_in(Lang::Rust, name)
    }

    /// [`Plugin::hello`] in `lang`: the same grants, limits and answers.
    pub fn hello_in(lang: Lang, name: &str) -> Plugin {
        Plugin {
            name: name.to_string(),
            wasm: lang.hello_wasm(),
            listen: "127.0.0.1:0".to_string(),
            prefix: format!("/{name}/"),
            grants: "{ kv: true, config: true, log: true }".to_string(),
            limits: Limits::default(),
            settings: String::new(),
        }
    }

    /// The misbehaving fixture mounted at `/<name>/` with every grant
    /// (`net` read-only, on no link of the host's namespace; `wireguard` on
    /// no device).
    pub fn fixture(name: &str) -> Plugin {
        Plugin {
            name: name.to_string(),
            wasm: wasm("fixture"),
            listen: "127.0.0.1:0".to_string(),
            prefix: format!("/{name}/"),
            grants: "{ kv: true, keys: true, crypto: true, config: true, log: true, jobs: true, ratelimit: true, net: { links: [fx-no-link] }, wireguard: { devices: [fx-no-device] } }"
                .to_string(),
            limits: Limits::default(),
            settings: String::new(),
        }
    }

    pub fn prefix(mut self, prefix: &str) -> Plugin {
        self.prefix = prefix.to_string();
        self
    }

    pub fn settings(mut self, settings: &str) -> Plugin {
        self.settings = settings.to_string();
        self
    }

    pub fn grants(mut self, grants: &str) -> Plugin {
        self.grants = grants.to_string();
        self
    }

    pub fn memory_mb(mut self, mb: u64) -> Plugin {
        self.limits.memory_mb = mb;
        self
    }

    pub fn timeout_ms(mut self, ms: u64) -> Plugin {
        self.limits.timeout_ms = ms;
        self
    }

    pub fn max_body_bytes(mut self, bytes: u64) -> Plugin {
        self.limits.max_body_bytes = bytes;
        self
    }

    pub fn max_response_bytes(mut self, bytes: u64) -> Plugin {
        self.limits.max_response_bytes = bytes;
        self
    }

    /// Adds `limits:` entries, e.g. `max_concurrency: 1, max_queue: 2`.
    pub fn limits_extra(mut self, entries: &str) -> Plugin {
        self.limits.extra = format!("{}, {entries}", self.limits.extra);
        self
    }

    /// This entry as YAML, indented for the `plugins:` list.
    pub fn yaml(&self) -> String {
        let Limits {
            memory_mb,
            timeout_ms,
            max_body_bytes,
            max_response_bytes,
            extra,
        } = &self.limits;
        let mut y = format!(
            "  - name: {name}\n    wasm: {wasm}\n    mounts:\n      - listen: {listen}\n        prefix: {prefix}\n    grants: {grants}\n    limits: {{ memory_mb: {memory_mb}, timeout_ms: {timeout_ms}, max_body_bytes: {max_body_bytes}, max_response_bytes: {max_response_bytes}{extra} }}\n",
            name = self.name,
            wasm = quote(&self.wasm.to_string_lossy()),
            listen = quote(&self.listen),
            prefix = quote(&self.prefix),
            grants = self.grants,
        );
        if !self.settings.is_empty() {
            y.push_str(&format!("    settings: {}\n", self.settings));
        }
        y
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A whole config.yaml serving `plugins`, every listener on port 0.
pub fn config_yaml(plugins: &[Plugin]) -> String {
    config_yaml_with("", plugins)
}

/// Like [`config_yaml`], with more top-level sections (`runtime:`, `http:`)
/// given as YAML text.
pub fn config_yaml_with(sections: &str, plugins: &[Plugin]) -> String {
    let mut y =
        format!("data_dir: ./data\nadmin:\n  listen: \"127.0.0.1:0\"\n{sections}plugins:\n");
    for p in plugins {
        y.push_str(&p.yaml());
    }
    y
}

/// A temp dir with a config.yaml and a data dir, which the CLI runs against.
pub struct Setup {
    dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// `ulimit` options for the binary, e.g. `-v 4194304` (a small address
    /// space like a router's) or `-n 256` (few file descriptors).
    ulimits: Vec<String>,
    /// More arguments for `serve`.
    serve_extra: Vec<String>,
    /// Environment changes for the binary: a value to set, or `None` to remove.
    env: Vec<(String, Option<String>)>,
    /// Whether the server runs as `wasmgate dev`.
    dev: bool,
}

impl Setup {
    pub fn new(plugins: &[Plugin]) -> Setup {
        let setup = Setup::with_yaml(&config_yaml(plugins));
        if plugins.iter().any(|p| is_script_plugin(&p.wasm)) {
            seed_cache(&setup.data_dir);
        }
        setup
    }

    /// A setup whose config.yaml is exactly `yaml` (for config error tests).
    pub fn with_yaml(yaml: &str) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("wasmgate-e2e-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).expect("write config.yaml");
        let data_dir = dir.path().join("data");
        Setup {
            dir,
            config,
            data_dir,
            ulimits: Vec::new(),
            serve_extra: Vec::new(),
            env: Vec::new(),
            dev: false,
        }
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for the
    /// binary, after the harness's own (`RUST_LOG` removed, `NO_COLOR=1`).
    pub fn env(mut self, key: &str, value: Option<&str>) -> Setup {
        self.env.push((key.to_string(), value.map(str::to_string)));
        self
    }

    /// Runs the binary under `ulimit -v kib`: a small address space like a router's.
    pub fn limit_address_space(mut self, kib: u64) -> Setup {
        self.ulimits.push(format!("-v {kib}"));
        self
    }

    /// Adds an argument to `serve`.
    pub fn serve_arg(mut self, arg: &str) -> Setup {
        self.serve_extra.push(arg.to_string());
        self
    }

    /// Runs the binary under `ulimit -n n` (soft and hard).
    pub fn limit_open_files(mut self, n: u64) -> Setup {
        self.ulimits.push(format!("-n {n}"));
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The binary with `args`, run from the temp dir with a predictable log filter.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = if self.ulimits.is_empty() {
            Command::new(BIN)
        } else {
            let limits: Vec<String> = self
                .ulimits
                .iter()
                .map(|l| format!("ulimit {l} && "))
                .collect();
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("{}exec \"$0\" \"$@\"", limits.concat()))
                .arg(BIN);
            sh
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Runs the binary to completion (bounded by a timeout).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run_with_timeout(self.command(args), COMMAND_TIMEOUT)
    }

    /// `wasmgate check --config <config>`.
    pub fn check(&self) -> Output {
        self.run(&[
            OsStr::new("check"),
            OsStr::new("--config"),
            self.config.as_os_str(),
        ])
    }

    /// `wasmgate call PLUGIN METHOD PATH --config .. --data-dir .. EXTRA...`.
    pub fn call(&self, plugin: &str, method: &str, path: &str, extra: &[&str]) -> Output {
        let mut args: Vec<OsString> = vec![
            "call".into(),
            plugin.into(),
            method.into(),
            path.into(),
            "--config".into(),
            self.config.clone().into(),
            "--data-dir".into(),
            self.data_dir.clone().into(),
        ];
        args.extend(extra.iter().map(Into::into));
        self.run(&args)
    }

    /// `wasmgate serve --strict` that is expected to exit by itself (a bad
    /// config, or a plugin that does not load).
    pub fn serve_expecting_failure(&self) -> Output {
        let mut args = self.serve_args();
        if !self.dev {
            args.push(OsStr::new("--strict"));
        }
        self.run(&args)
    }

    fn serve_args(&self) -> Vec<&OsStr> {
        if self.dev {
            return vec![
                OsStr::new("dev"),
                OsStr::new("--config"),
                self.config.as_os_str(),
            ];
        }
        let mut args = vec![
            OsStr::new("serve"),
            OsStr::new("--config"),
            self.config.as_os_str(),
            OsStr::new("--data-dir"),
            self.data_dir.as_os_str(),
        ];
        args.extend(self.serve_extra.iter().map(OsStr::new));
        args
    }

    pub fn serve(self) -> Server {
        Server::serve(self)
    }

    /// `wasmgate dev --config <config>` in place of `serve` (the config's
    /// own `data_dir`).
    pub fn dev(mut self) -> Server {
        self.dev = true;
        Server::serve(self)
    }
}

/// Runs `cmd` with piped output; kills it and panics when it outlives `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.join().unwrap_or_default()),
                String::from_utf8_lossy(&err.join().unwrap_or_default()),
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Parses the output of `wasmgate call`: `HTTP <status>`, header lines, a
/// blank line, the body.
#[track_caller]
pub fn parse_call_output(output: &Output) -> Response {
    let stdout = &output.stdout;
    let text = String::from_utf8_lossy(stdout);
    let Some(head_end) = find(stdout, b"\n\n") else {
        panic!(
            "call output has no blank line after the headers:\n{}",
            describe(output)
        );
    };
    let head = String::from_utf8_lossy(&stdout[..head_end]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("call output does not start with `HTTP <status>`:\n{text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = stdout[head_end + 2..].to_vec();
    // The CLI may end the body with a newline for the terminal's sake.
    if body.last() == Some(&b'\n') {
        body.pop();
    }
    Response {
        status,
        headers,
        body,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A running `wasmgate serve`.
pub struct Server {
    setup: Setup,
    child: Option<Child>,
    /// `(actual address, configured listen string)` of each plugin listener.
    plugin_listeners: Vec<(SocketAddr, String)>,
    admin: Option<SocketAddr>,
    /// Everything the process wrote to stdout and stderr, across restarts.
    log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(plugins: &[Plugin]) -> Server {
        Setup::new(plugins).serve()
    }

    fn serve(setup: Setup) -> Server {
        let mut server = Server {
            setup,
            child: None,
            plugin_listeners: Vec::new(),
            admin: None,
            log: Arc::new(Mutex::new(String::new())),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = self.setup.command(&self.setup.serve_args());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));

        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::clone(&self.log);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                append(&log, &line);
                // After `ready` nobody listens any more; that is fine.
                let _ = tx.send(line);
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&self.log);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            // Byte lines: a plugin's output need not be UTF-8.
            while let Ok(n) = reader.read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                append(&log, String::from_utf8_lossy(&line).trim_end_matches('\n'));
                line.clear();
            }
        });
        self.child = Some(child);
        self.plugin_listeners.clear();
        self.admin = None;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(remaining) {
                Ok(line) => {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["ready"] => break,
                        ["listening", "plugins", actual, configured @ ..] => {
                            let addr = parse_addr(actual, &line);
                            self.plugin_listeners.push((addr, configured.join(" ")));
                        }
                        ["listening", "admin", actual, ..] => {
                            self.admin = Some(parse_addr(actual, &line));
                        }
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill_now();
                    panic!(
                        "server not ready after {READY_TIMEOUT:?}; output:\n{}",
                        self.logs()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    self.child = None;
                    // Give the stderr reader a moment to catch the last words.
                    thread::sleep(Duration::from_millis(200));
                    panic!(
                        "server exited before `ready` ({status:?}); output:\n{}",
                        self.logs()
                    );
                }
            }
        }
        assert!(
            !self.plugin_listeners.is_empty() && self.admin.is_some(),
            "`ready` came before the `listening` lines; output:\n{}",
            self.logs()
        );
    }

    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// The first plugin listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.plugin_listeners[0].0
    }

    /// The listener bound for the configured `listen` string.
    pub fn addr_of(&self, configured: &str) -> SocketAddr {
        self.plugin_listeners
            .iter()
            .find(|(_, c)| c == configured)
            .map(|(a, _)| *a)
            .unwrap_or_else(|| panic!("no listener for {configured}: {:?}", self.plugin_listeners))
    }

    pub fn plugin_listeners(&self) -> &[(SocketAddr, String)] {
        &self.plugin_listeners
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("admin listener")
    }

    /// `wasmgate ARGS... --config C --data-dir D --admin A`: a command that
    /// talks to this server's admin API (`reload`, `plugin ...`).
    pub fn admin_cli(&self, args: &[&str]) -> Output {
        let admin = self.admin_addr().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&[
            "--config",
            self.setup.config.to_str().expect("a UTF-8 path"),
            "--data-dir",
            self.setup.data_dir.to_str().expect("a UTF-8 path"),
            "--admin",
            &admin,
        ]);
        let mut cmd = self.setup.command(&all);
        cmd.env("NO_COLOR", "1");
        run_with_timeout(cmd, Duration::from_secs(120))
    }

    /// A URL on the first plugin listener, for messages and external tools.
    #[allow(dead_code)]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    #[allow(dead_code)]
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    /// The bearer token from `<data_dir>/admin.token`.
    pub fn admin_token(&self) -> String {
        let path = self.setup.data_dir.join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// A request to the first plugin listener on a fresh connection.
    #[track_caller]
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http::send(self.addr(), method, path, headers, body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} failed: {e}\nserver output:\n{}",
                self.logs()
            )
        })
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.send("GET", path, &[], b"")
    }

    #[track_caller]
    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        self.send("POST", path, &[], body)
    }

    #[track_caller]
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        self.send(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    #[track_caller]
    pub fn put(&self, path: &str, body: &[u8]) -> Response {
        self.send("PUT", path, &[], body)
    }

    #[track_caller]
    pub fn delete(&self, path: &str) -> Response {
        self.send("DELETE", path, &[], b"")
    }

    /// A keep-alive connection to the first plugin listener.
    pub fn connect(&self) -> Conn {
        Conn::open(self.addr()).expect("connect to the plugin listener")
    }

    /// A GET on the admin listener, with `Authorization: Bearer <token>` when given.
    #[track_caller]
    pub fn admin_get(&self, path: &str, token: Option<&str>) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        http::send(self.admin_addr(), "GET", path, &headers, b"").unwrap_or_else(|e| {
            panic!(
                "admin GET {path} failed: {e}\nserver output:\n{}",
                self.logs()
            )
        })
    }

    /// `METHOD /plugins/<plugin>/admin<path>` on the admin listener with the
    /// admin token; a null `body` sends none, anything else as JSON.
    #[track_caller]
    pub fn plugin_admin(
        &self,
        plugin: &str,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Response {
        let auth = format!("Bearer {}", self.admin_token());
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        http::send(
            self.admin_addr(),
            method,
            &format!("/plugins/{plugin}/admin{path}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            &body,
        )
        .unwrap_or_else(|e| panic!("admin {method} {path}: {e}\n{}", self.logs()))
    }

    /// Everything the server has written to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn log_len(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or_default()
    }

    /// Waits until the output contains every one of `needles` (logging is
    /// asynchronous, so a line may follow its response by a little).
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if needles.iter().all(|n| logs.contains(n)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// VmRSS of the server process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) to the server.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the process to exit by itself; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("server is running");
            if let Some(status) = child.try_wait().expect("wait for the server") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if the process outlives [`STOP_TIMEOUT`].
    /// Returns the exit status of the SIGTERM, or None if it took SIGKILL
    /// (or the server was not running).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.signal("TERM");
        match self.wait_exit(STOP_TIMEOUT) {
            Some(status) => Some(status),
            None => {
                self.kill_now();
                None
            }
        }
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same config and data dir
    /// (the listeners get new ports).
    pub fn restart(&mut self) {
        let status = self.stop();
        append(
            &self.log,
            &format!("--- harness: restart (previous exit: {status:?}) ---"),
        );
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn append(log: &Mutex<String>, line: &str) {
    if let Ok(mut log) = log.lock() {
        log.push_str(line);
        log.push('\n');
    }
}

#[track_caller]
fn parse_addr(word: &str, line: &str) -> SocketAddr {
    word.parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
}

pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("run kill");
    // A process that already exited is not an error here.
    let _ = status;
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Keep-alive clients sending `GET path` over and over while a test changes
/// the server under them (a reload, an upgrade, a rebuild).
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<thread::JoinHandle<LoadReport>>,
}

/// What the clients saw: each answer `check` accepted, with when its
/// request was sent and what `check` made of it, and every failure (a
/// refused answer, a reset connection).
#[derive(Default)]
pub struct LoadReport {
    pub answers: Vec<(Instant, String)>,
    pub failed: Vec<String>,
}

impl Load {
    /// `connections` clients on `addr`; `check` turns an answer into its
    /// label (`Ok`) or says what is wrong with it (`Err`).
    pub fn start(
        addr: SocketAddr,
        path: &'static str,
        connections: usize,
        check: fn(&Response) -> Result<String, String>,
    ) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..connections)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut seen = LoadReport::default();
                    let mut conn = Conn::open(addr).expect("connect");
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let sent = Instant::now();
                        match conn.send("GET", path, &[], b"") {
                            Ok(r) => match check(&r) {
                                Ok(label) => seen.answers.push((sent, label)),
                                Err(e) => seen.failed.push(e),
                            },
                            Err(e) => {
                                seen.failed.push(e.to_string());
                                conn = Conn::open(addr).expect("reconnect");
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        Load { stop, workers }
    }

    /// Stops the clients; everything they saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = LoadReport::default();
        for w in self.workers {
            let seen = w.join().expect("a load client panicked");
            all.answers.extend(seen.answers);
            all.failed.extend(seen.failed);
        }
        all
    }
}

impl LoadReport {
    /// Asserts that no request failed.
    #[track_caller]
    pub fn assert_none_failed(&self) {
        assert!(
            self.failed.is_empty(),
            "{} failed requests: {:?}",
            self.failed.len(),
            &self.failed[..self.failed.len().min(10)]
        );
    }
}

/// A 200 answer's JSON `message`, as a [`Load`] check.
pub fn message_of(r: &Response) -> Result<String, String> {
    let json = serde_json::from_slice::<serde_json::Value>(&r.body).ok();
    match (r.status, json.as_ref().and_then(|v| v["message"].as_str())) {
        (200, Some(m)) => Ok(m.to_string()),
        _ => Err(format!("{} {}", r.status, r.text())),
    }
}

/// A free loopback port (bound, then released), for a listener the server
/// opens later.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
