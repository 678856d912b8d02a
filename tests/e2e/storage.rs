//! The data directory on disk: who may read it, a full disk, a damaged or
//! empty database, a damaged cache (README, "Data directory").

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::e2e::harness::{Plugin, Server, Setup};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every path under `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if dir.is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

/// Whether user `nobody` can read `path` (list it, for a directory).
fn nobody_can_read(path: &Path) -> bool {
    let mut cmd = if path.is_dir() {
        Command::new("ls")
    } else {
        Command::new("cat")
    };
    cmd.arg(path).uid(65534).gid(65534);
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn nothing_in_the_data_directory_is_readable_by_another_user() {
    if !is_root() {
        println!(
            "SKIP nothing_in_the_data_directory_is_readable_by_another_user: needs root to act as `nobody`"
        );
        return;
    }
    let mut server = Server::start(&[Plugin::hello("hello")]);
    server
        .post("/hello/notes", br#"{"title":"t","body":"secret"}"#)
        .expect(201);
    server.stop();
    let setup = server.setup();
    // The temp dir itself is private; open it so that only the data
    // directory's own modes stand between `nobody` and the files.
    std::fs::set_permissions(setup.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let paths = walk(&setup.data_dir);
    assert!(
        paths.iter().any(|p| p.ends_with("wasmgate.redb")),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p.ends_with("admin.token")));
    assert!(
        paths
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "cwasm"))
    );
    for p in &paths {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{}", p.display());
    }
    assert!(
        !nobody_can_read(&setup.data_dir),
        "nobody lists the data directory"
    );
    // Even with the directory opened up, each file keeps nobody out.
    std::fs::set_permissions(&setup.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        setup.data_dir.join("cache"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for p in paths.iter().filter(|p| p.is_file()) {
        assert!(!nobody_can_read(p), "nobody reads {}", p.display());
    }
}

#[test]
fn an_existing_data_directory_open_to_others_is_made_private_with_a_warning() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    std::fs::create_dir_all(setup.data_dir.join("cache")).unwrap();
    std::fs::write(setup.data_dir.join("admin.token"), "0123456789abcdef\n").unwrap();
    for (p, m) in [
        (setup.data_dir.clone(), 0o755),
        (setup.data_dir.join("cache"), 0o755),
        (setup.data_dir.join("admin.token"), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let server = setup.serve();
    let data = &server.setup().data_dir;
    assert_eq!(mode(data), 0o700);
    assert_eq!(mode(&data.join("cache")), 0o700);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    assert_eq!(mode(&data.join("wasmgate.redb")), 0o600);
    assert!(
        server
            .logs()
            .contains("the data directory was readable by other users"),
        "{}",
        server.logs()
    );
    assert_eq!(
        server.admin_token(),
        "0123456789abcdef",
        "the token itself is kept"
    );
}

/// A tmpfs of `mib` MiB mounted at `dir` for as long as it lives.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, mib: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes a file until the disk refuses more.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        // Whatever is left below one chunk, byte by byte.
        while std::io::Write::write_all(&mut f, &[0]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_full_disk_answers_503_until_space_is_freed_and_writes_then_work_without_a_restart() {
    if !is_root() {
        println!("SKIP a_full_disk_answers_503_...: needs root to mount a small tmpfs");
        return;
    }
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let Some(disk) = SmallDisk::mount(&setup.data_dir, 24) else {
        println!("SKIP a_full_disk_answers_503_...: cannot mount a tmpfs here");
        return;
    };
    let server = setup.serve();
    let note = |i: usize| format!(r#"{{"title":"n{i}","body":"{}"}}"#, "x".repeat(2000));
    for i in 0..5 {
        server.post("/hello/notes", note(i).as_bytes()).expect(201);
    }
    let filler = disk.fill();
    // Writes now fail; the first failing one may take a few tries (redb
    // has room in pages it already holds).
    let mut first_503 = None;
    for i in 5..2000 {
        let r = server.post("/hello/notes", note(i).as_bytes());
        match r.status {
            201 => continue,
            503 => {
                first_503 = Some(r);
                break;
            }
            other => panic!("a write on a full disk answered {other}: {}", r.text()),
        }
    }
    let r = first_503.expect("a write failed before 2000 notes on a full disk");
    assert_eq!(
        r.json()["error"],
        "storage unavailable: the disk is full; retry later",
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    r.request_id();
    let later = server.post("/hello/notes", note(0).as_bytes());
    later.expect(503);
    let health = server.admin_get("/health", None);
    health.expect(503);
    assert_eq!(health.json()["status"], "degraded");
    let token = server.admin_token();
    let m = server.admin_get("/metrics", Some(&token)).text();
    assert_eq!(metric(&m, "wasmgate_storage_up"), Some(0.0), "{m}");
    assert!(metric(&m, "wasmgate_storage_failures").unwrap_or(0.0) >= 1.0);

    std::fs::remove_file(&filler).unwrap();
    let back = crate::e2e::harness::eventually(std::time::Duration::from_secs(15), || {
        let r = server.post("/hello/notes", note(99).as_bytes());
        (r.status == 201).then_some(r)
    });
    assert!(
        back.is_some(),
        "writes never worked again after space was freed: {}",
        server.logs()
    );
    server.admin_get("/health", None).expect(200);
    let m = server.admin_get("/metrics", Some(&token)).text();
    assert_eq!(metric(&m, "wasmgate_storage_up"), Some(1.0));
    let titles: Vec<String> = server.get("/hello/notes").json()["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_string())
        .collect();
    for i in 0..5 {
        assert!(
            titles.contains(&format!("n{i}")),
            "acknowledged note n{i} is kept: {titles:?}"
        );
    }
    assert!(titles.contains(&"n99".to_string()));
    drop(server);
    drop(disk);
}

#[test]
fn a_first_start_on_a_full_disk_says_the_disk_is_full_and_leaves_nothing_behind() {
    if !is_root() {
        println!("SKIP a_first_start_on_a_full_disk_...: needs root to mount a small tmpfs");
        return;
    }
    let setup = Setup::new(&[Plugin::hello("hello")]);
    let Some(disk) = SmallDisk::mount(&setup.data_dir, 1) else {
        println!("SKIP a_first_start_on_a_full_disk_...: cannot mount a tmpfs here");
        return;
    };
    let filler = disk.fill();
    let out = setup.serve_expecting_failure();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the disk is full"), "{stderr}");
    let left: Vec<PathBuf> = walk(&setup.data_dir)
        .into_iter()
        .filter(|p| *p != setup.data_dir && *p != filler)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(disk);
}

#[test]
fn an_empty_database_file_is_refused_unless_asked_to_start_afresh() {
    let setup = Setup::new(&[Plugin::hello("hello")]);
    std::fs::create_dir_all(&setup.data_dir).unwrap();
    std::fs::write(setup.data_dir.join("wasmgate.redb"), b"").unwrap();
    let out = setup.serve_expecting_failure();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is an empty file (0 bytes), not a wasmgate database"),
        "{stderr}"
    );
    assert!(stderr.contains("--accept-empty-database"), "{stderr}");
    let server = setup.serve_arg("--accept-empty-database").serve();
    server
        .post("/hello/notes", br#"{"title":"t","body":"b"}"#)
        .expect(201);
}

#[test]
fn a_cache_entry_that_is_a_directory_is_compiled_again() {
    let mut server = Server::start(&[Plugin::hello("hello")]);
    server.stop();
    let cache = server.setup().data_dir.join("cache");
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!entries.is_empty());
    for e in &entries {
        std::fs::remove_file(e).unwrap();
        std::fs::create_dir_all(e.join("in-the-way")).unwrap();
    }
    server.restart();
    server.get("/hello/").expect(200);
    for e in &entries {
        assert!(e.is_file(), "{} is a cached artefact again", e.display());
    }
}

/// The byte offset of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_damaged_key_in_the_database_fails_its_request_with_500_and_the_server_lives_on() {
    const MARKER: &str = "damaged-key-marker-0123456789";
    let mut server = Server::start(&[Plugin::fixture("fx")]);
    for k in ["a-first", MARKER, "z-last"] {
        server.put(&format!("/fx/kv/{k}"), b"value").expect(204);
    }
    server.stop();
    let file = server.setup().data_dir.join("wasmgate.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = find(&bytes, MARKER.as_bytes()).expect("the key is in the file");
    // Not UTF-8 any more.
    bytes[at + 3] = 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let check = server.setup().run(&[
        "db".as_ref(),
        "check".as_ref(),
        "--config".as_ref(),
        server.setup().config.as_os_str(),
        "--data-dir".as_ref(),
        server.setup().data_dir.as_os_str(),
    ]);
    assert!(!check.status.success(), "db check finds the damage");
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("is damaged"),
        "{}",
        crate::e2e::harness::describe(&check)
    );

    server.restart();
    // Listing the keys reads the damaged one.
    let r = server.get("/fx/kv");
    r.expect(500);
    assert_eq!(r.json()["error"], "internal error");
    r.request_id();
    server.admin_get("/health", None).expect(200);
    server.get("/fx/ok").expect(200);
    let m = server
        .admin_get("/metrics", Some(&server.admin_token()))
        .text();
    assert!(
        m.contains("wasmgate_host_panics_total{plugin=\"fx\"}"),
        "{m}"
    );
}

#[test]
fn a_backup_taken_while_serving_restores_every_row() {
    let server = Server::start(&[Plugin::hello("hello")]);
    for i in 0..20 {
        server
            .post(
                "/hello/notes",
                format!(r#"{{"title":"n{i}","body":"b"}}"#).as_bytes(),
            )
            .expect(201);
    }
    let token = server.admin_token();
    let r = crate::e2e::http::send(
        server.admin_addr(),
        "POST",
        "/backup",
        &[("authorization", &format!("Bearer {token}"))],
        b"",
    )
    .unwrap();
    r.expect(200);
    let path = PathBuf::from(r.json()["path"].as_str().unwrap());
    assert_eq!(mode(&path), 0o600);

    let restored = Setup::new(&[Plugin::hello("hello")]);
    std::fs::create_dir_all(&restored.data_dir).unwrap();
    std::fs::copy(&path, restored.data_dir.join("wasmgate.redb")).unwrap();
    let check = restored.run(&[
        "db".as_ref(),
        "check".as_ref(),
        "--config".as_ref(),
        restored.config.as_os_str(),
        "--data-dir".as_ref(),
        restored.data_dir.as_os_str(),
    ]);
    assert!(
        check.status.success(),
        "{}",
        crate::e2e::harness::describe(&check)
    );
    let copy = restored.serve();
    assert_eq!(
        copy.get("/hello/notes").json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
}
