//! Background jobs: enqueued with a delay, run later by the host in a fresh
//! instance, kept in redb across restarts.

use std::time::{Duration, Instant};

use crate::e2e::harness::{Plugin, Server, eventually};

fn enqueue(server: &Server, key: &str, delay_ms: u64) -> String {
    let r = server.post(&format!("/fx/job?key={key}&delay_ms={delay_ms}"), b"");
    r.expect(202);
    let id = r.json()["id"].as_str().map(str::to_string);
    id.unwrap_or_else(|| panic!("no job id: {r:?}"))
}

/// Waits for the job that writes `key` to have run.
fn wait_done(server: &Server, key: &str, timeout: Duration) -> bool {
    eventually(timeout, || {
        let r = server.get(&format!("/fx/kv/{key}"));
        (r.status == 200 && r.text() == "done").then_some(())
    })
    .is_some()
}

#[test]
fn a_delayed_job_runs_after_its_delay() {
    let server = Server::start(&[Plugin::fixture("fx")]);
    let started = Instant::now();
    enqueue(&server, "soon", 1500);
    // Not before its time.
    let r = server.get("/fx/kv/soon");
    if started.elapsed() < Duration::from_millis(1200) {
        r.expect(404);
    }
    assert!(
        wait_done(&server, "soon", Duration::from_secs(15)),
        "the job never set `soon` to done; log:\n{}",
        server.logs()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the job ran after {:?}, before its 1500 ms delay",
        started.elapsed()
    );
}

#[test]
fn jobs_get_distinct_ids_and_all_run() {
    let server = Server::start(&[Plugin::fixture("fx")]);
    let ids: Vec<String> = (0..5)
        .map(|i| enqueue(&server, &format!("k{i}"), 0))
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "job ids repeat: {ids:?}");
    for i in 0..5 {
        assert!(
            wait_done(&server, &format!("k{i}"), Duration::from_secs(15)),
            "job k{i} never ran"
        );
    }
}

#[test]
fn a_queued_job_survives_a_restart_and_then_runs() {
    let mut server = Server::start(&[Plugin::fixture("fx")]);
    enqueue(&server, "later", 4000);
    server.get("/fx/kv/later").expect(404);

    server.restart();

    assert!(
        wait_done(&server, "later", Duration::from_secs(30)),
        "the job queued before the restart never ran; log:\n{}",
        server.logs()
    );
}

#[test]
fn a_job_runs_only_in_its_own_plugin() {
    let server = Server::start(&[
        Plugin::fixture("fx"),
        Plugin::fixture("other").timeout_ms(3000),
    ]);
    enqueue(&server, "mine", 0);
    assert!(wait_done(&server, "mine", Duration::from_secs(15)));
    server.get("/other/kv/mine").expect(404);
}
