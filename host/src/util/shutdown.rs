//! The stop signal: a `watch` that turns true once, so a loop busy when
//! shutdown starts still sees it on its next turn.

/// Resolves once `stop` says the server is stopping (at once if it already is).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}
