//! Building and running the server: from settings to a listening app, in a form a
//! test can start on an ephemeral port and stop with a future.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    auth::{Authenticator, JwtKeys, LoginFailures, PasswordHasher, resolve_jwt_secret},
    cluster::{Cluster, Remote},
    config::Settings,
    events::{
        commands::{CommandLimits, Commands},
        fanout::{Fanout, Origin, Sink},
        interest::{Holder, Interest},
        publisher::Publisher,
        subscribers::{SubscriberLimits, Subscribers},
        waiters::Waiters,
    },
    http::{self, listener::ConnectionLimits},
    realtime::{self, Broadcaster, Connections, Expiries, Presence, Realtime, presence::PresenceLimits, presence_sync},
    state::{AppState, Shared},
    store::Store,
    telemetry::{live::LiveStats, metrics},
};

/// Opens storage, resolves the token secret and assembles the shared state.
pub async fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    // Installed before anything records, so no early figure is lost.
    metrics::handle();
    let secret = resolve_jwt_secret(settings.jwt_secret.as_deref(), &settings.data_dir)?;
    let store = Store::connect(&settings).await?;
    let keys = JwtKeys::new(&secret, &settings);
    let passwords = tokio::task::spawn_blocking(PasswordHasher::new).await??;
    let (service, io) = realtime::server::build(&settings);
    let connections = Arc::new(Connections::new(settings.max_connections, settings.max_sockets_per_user));
    let (interest, cluster) = match &settings.redis_url {
        Some(url) => {
            let (interest, changes) = Interest::routed();
            (interest.clone(), Some((Cluster::connect(url, &settings.redis_channel, interest).await?, changes)))
        }
        None => {
            store.trust_token_states_of_one_node().await;
            (Interest::single_node(), None)
        }
    };
    let (cluster, changes) = cluster.unzip();
    if let Some(cluster) = &cluster {
        cluster.count_sockets_of(connections.clone());
    }
    let presence = Arc::new(Presence::new(io.clone(), PresenceLimits::from_settings(&settings), cluster.clone()));
    if let Some(cluster) = &cluster {
        realtime::presence_sync::start(&presence, cluster.clone());
    }
    let realtime = Realtime {
        io: io.clone(),
        service,
        connections,
        presence,
        expiries: Expiries::start(),
        cluster: cluster.clone(),
    };
    let waiters = Arc::new(Waiters::new(settings.long_poll_max_waiters, interest.clone()));
    let subscribers = Subscribers::new(SubscriberLimits {
        max_connections: settings.sse_max_connections,
        max_per_user: settings.sse_max_per_user,
        buffer: settings.sse_buffer_events,
    });
    let stats = Arc::new(LiveStats::default());
    // Every transport of committed events: long polls, event streams, sockets, then
    // other nodes.
    let broadcaster = Arc::new(Broadcaster::new(io.clone(), realtime.presence.clone()));
    let sinks: Vec<Arc<dyn Sink>> = vec![waiters.clone(), subscribers.clone(), broadcaster.clone()];
    let holders: Vec<Arc<dyn Holder>> = vec![waiters.clone(), subscribers.clone(), broadcaster];
    interest.start_sweeping(holders);
    let mut fanout = Fanout::new(store.clone(), sinks, stats.clone());
    if let Some(cluster) = &cluster {
        fanout = fanout.with_relay(cluster.clone());
    }
    if let (Some(cluster), Some(changes)) = (&cluster, changes) {
        let (fanout, realtime, store, subscribers) =
            (fanout.clone(), realtime.clone(), store.clone(), subscribers.clone());
        cluster.spawn_listener(changes, move |remote| {
            let (fanout, realtime, store, subscribers) =
                (fanout.clone(), realtime.clone(), store.clone(), subscribers.clone());
            async move {
                match remote {
                    Remote::Deliver(event) => fanout.deliver(&event, Origin::Remote).await,
                    // Sent on logout and deletion: the user's token state changed.
                    Remote::DisconnectUser(user) => {
                        store.forget_user(user);
                        subscribers.end_user(user);
                        realtime.disconnect_local(user).await;
                    }
                    Remote::Presence { node, namespace, course, change } => {
                        presence_sync::heard(&realtime.presence, node, &namespace, course, &change)
                    }
                    Remote::NodeLeft(node) => realtime.presence.forget_remote(Some(node)),
                    Remote::Isolated => {
                        tracing::warn!("presence falls back to this node's own users until Redis answers");
                        realtime.presence.forget_remote(None);
                    }
                    // In a task of its own: the listener goes on receiving meanwhile.
                    Remote::Linked => {
                        if let Some(cluster) = realtime.cluster.clone() {
                            let presence = realtime.presence.clone();
                            tokio::spawn(async move { presence_sync::sync_all(&presence, &cluster).await });
                        }
                    }
                }
            }
        });
    }
    let publisher = Publisher::start(store.clone(), fanout).context("starting the writer")?;
    let limits = CommandLimits { message_max_chars: settings.message_max_chars };
    let login_failures =
        LoginFailures::new(settings.login_failures_per_ip_per_minute, settings.login_failures_per_account_per_minute);
    let state = AppState::new(Shared {
        auth: Authenticator::new(keys, store.clone()),
        commands: Commands::new(store.clone(), publisher, limits),
        stats,
        waiters,
        subscribers,
        realtime,
        interest,
        settings: Arc::new(settings),
        store,
        passwords,
        login_failures,
        started_at: Instant::now(),
    });
    realtime::namespaces::register(&io, &state);
    Ok(state)
}

/// Connections the kernel queues before the server accepts them (capped by
/// `net.core.somaxconn`). tokio's `TcpListener::bind` asks for 128; a burst of
/// handshakes beyond that has SYNs dropped (`ListenOverflows`), and each costs its
/// client a 1 s retransmit: 10,000 sockets joining one course, 256 in flight, had a
/// connect+join p99 of 1.1 s that way; with this backlog none overflowed (p99 108 ms).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the server's listening socket with a backlog for bursts of handshakes.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind`: a restarted server can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
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
///
/// Shutdown, once `shutdown` resolves: stop accepting, answer waiting long polls,
/// end every event stream (`end` `UNAVAILABLE`: clients resume elsewhere), close
/// every socket's transport (official clients then reconnect by themselves),
/// let in-flight requests and appends finish, close storage. Past
/// `SHUTDOWN_TIMEOUT` the process stops waiting.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = state.settings.clone();
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop.send_replace(true);
    });
    if let Some(port) = settings.metrics_port {
        spawn_metrics_server(SocketAddr::new(settings.host, port), stopping.clone()).await?;
    }

    let gate = realtime::gate::Gate::new(&settings);
    let router = http::router(&state)
        .with_state(state.clone())
        .merge(realtime::gate::router(gate, state.realtime.service.clone()));
    let service = http::outer_layers(router, &settings);
    tracing::info!(addr = %listener.local_addr()?, database = ?state.store.kind(), "coursecast listening");
    let (io, waiters, subscribers) = (state.realtime.io.clone(), state.waiters.clone(), state.subscribers.clone());
    let server = http::listener::serve(
        listener,
        service,
        ConnectionLimits::from_settings(&settings),
        requested(stopping.clone()),
        async move {
            tracing::info!("shutting down: releasing long polls, ending event streams, closing sockets");
            waiters.stop();
            subscribers.stop();
            io.close().await;
        },
    );
    let drain = async {
        server.await;
        state.commands.drained().await;
    };
    let deadline = async {
        requested(stopping.clone()).await;
        tokio::time::sleep(settings.shutdown_timeout()).await;
    };
    tokio::select! {
        () = drain => {}
        () = deadline => tracing::warn!(timeout_secs = settings.shutdown_timeout_secs, "shutdown deadline passed; stopping anyway"),
    }
    state.realtime.detach();
    if let Some(cluster) = &state.realtime.cluster {
        cluster.leave_nodes().await;
    }
    state.store.close().await;
    tracing::info!("coursecast stopped");
    Ok(())
}

/// Resolves once `stopping` turns true.
async fn requested(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Serves `/metrics` alone on `addr` (`METRICS_PORT`) until shutdown.
async fn spawn_metrics_server(addr: SocketAddr, stopping: watch::Receiver<bool>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.context("binding METRICS_PORT")?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let server = axum::serve(listener, http::metrics_router()).with_graceful_shutdown(requested(stopping));
    tokio::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(error = %err, "metrics server failed");
        }
    });
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
