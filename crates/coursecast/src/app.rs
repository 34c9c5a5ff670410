//! Building and running the server: from settings to a listening app, in a form a
//! test can start on an ephemeral port and stop with a future.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context;
use tokio::net::TcpListener;

use axum::middleware;

use crate::{
    auth::{Authenticator, JwtKeys, PasswordHasher, resolve_jwt_secret},
    config::Settings,
    events::{fanout::Fanout, publisher::Publisher, waiters::Waiters},
    http,
    realtime::{self, Connections, Realtime},
    state::AppState,
    store::Store,
};

/// Opens storage, resolves the token secret and assembles the shared state.
pub async fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    let secret = resolve_jwt_secret(settings.jwt_secret.as_deref(), &settings.data_dir)?;
    let store = Store::connect(&settings).await?;
    let keys = JwtKeys::new(&secret, &settings);
    let passwords = tokio::task::spawn_blocking(PasswordHasher::new).await??;
    let (layer, io) = realtime::server::build(&settings);
    let connections = Arc::new(Connections::new(settings.max_connections, settings.max_sockets_per_user));
    let waiters = Arc::new(Waiters::new(settings.long_poll_max_waiters));
    let state = AppState {
        auth: Authenticator::new(keys, store.clone()),
        publisher: Publisher::start(store.clone(), Fanout::new(io.clone(), waiters.clone())),
        waiters,
        realtime: Realtime { io: io.clone(), layer, connections },
        settings: Arc::new(settings),
        store,
        passwords,
        started_at: Instant::now(),
    };
    realtime::namespaces::register(&io, &state);
    Ok(state)
}

/// Serves on `listener` until `shutdown` completes, then drains and closes storage.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run(build_state(settings).await?, listener, shutdown).await
}

/// Serves already-built state; tests use this to keep a handle on the same state.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = state.store.clone();
    let io = state.realtime.io.clone();
    let realtime = state.realtime.clone();
    let waiters = state.waiters.clone();
    let gate = realtime::gate::Gate::new(&state.settings);
    let settings = state.settings.clone();
    let router = http::router(&state)
        .with_state(state.clone())
        .layer(state.realtime.layer.clone())
        .layer(middleware::from_fn_with_state(gate, realtime::gate::gate));
    let router = http::outer_layers(router, &settings);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = ?store.kind(), "coursecast listening");
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            waiters.stop();
            // Close sockets so clients see a transport close and reconnect elsewhere.
            io.close().await;
        })
        .await
        .context("serving")?;
    realtime.detach();
    store.close().await;
    tracing::info!("coursecast stopped");
    Ok(())
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
