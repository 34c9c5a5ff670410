//! `sse`: N clients each holding one Server-Sent Events stream
//! (`GET /api/realtime/stream?streams=messages:<course>:<cursor>`) while senders
//! `POST` to the course at a total rate R: the long-poll scenario's measure for the
//! streaming transport. Reports event->client latency (from the send time embedded
//! in the content), losses and duplicates (every client must see every `seq` after
//! its start cursor exactly once). A stream the server ends (`end`) or that breaks is
//! opened again with its `Last-Event-ID`, as a browser would; those count as
//! reconnects. coursecast only: the Node baseline has no SSE.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde_json::json;
use tokio::sync::watch;

use super::polling::{ClientOutcome, Course, Load, Phase, caught_up, wait_for_clients};
use crate::{
    Env,
    eventstream::EventStream,
    procfs,
    progress::{Counter, Max, Progress},
    seqtrack::{Live, SeqTracker},
    stats::Latency,
    wire,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub load: Load,
    /// p99 event->client target, ms (DESIGN.md: 5,000 streaming clients, p99 < 50 ms).
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
}

#[derive(Clone, Default)]
struct Counters {
    open: Counter,
    events: Counter,
    errors: Counter,
    reconnects: Counter,
}

/// Where one client's stream is served from.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

/// One client: its stream, opened again with `Last-Event-ID` whenever it ends,
/// until the run settles and its cursor has reached the final head.
async fn subscriber(
    target: Target,
    token: String,
    start: i64,
    mut phase: watch::Receiver<Phase>,
    counters: Counters,
    warmup_until: Max,
    timeout: Duration,
) -> ClientOutcome {
    let mut out = ClientOutcome { latency: Latency::new(), tracker: SeqTracker::new(start), errors: BTreeMap::new() };
    let (mut cursor, mut last_id) = (start, None::<String>);
    let failure = |out: &mut ClientOutcome, kind: String| {
        counters.errors.inc();
        *out.errors.entry(kind).or_default() += 1;
    };
    'streams: loop {
        if let Phase::Settle(head) = *phase.borrow_and_update()
            && cursor >= head
        {
            break;
        }
        let opened =
            EventStream::open(target.addr, &target.host, &target.path, &token, last_id.as_deref(), timeout).await;
        let mut stream = match opened {
            Ok((_, Some(stream))) => stream,
            Ok((status, None)) => {
                failure(&mut out, format!("http_{status}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(kind) => {
                failure(&mut out, kind.label().to_owned());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        counters.open.inc();
        loop {
            let events = tokio::select! {
                events = stream.next() => events,
                () = caught_up(&mut phase, cursor) => {
                    counters.open.dec();
                    break 'streams;
                }
            };
            let Some(events) = events else {
                failure(&mut out, "closed".to_owned());
                break;
            };
            let now = wire::now_micros();
            let mut ended = false;
            for event in events {
                match event.name.as_str() {
                    "message" => {
                        if let Some((seq, sent)) = wire::seq_and_sent(&event.data)
                            && let Live::Fresh { .. } = out.tracker.on_live(seq)
                        {
                            counters.events.inc();
                            if let Some(sent) = sent.filter(|sent| *sent >= warmup_until.get() as u64) {
                                out.latency.record_micros(now.saturating_sub(sent));
                            }
                            cursor = cursor.max(seq);
                        }
                    }
                    "end" => {
                        let code = serde_json::from_str::<serde_json::Value>(&event.data)
                            .ok()
                            .and_then(|v| v["code"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        failure(&mut out, format!("end_{code}"));
                        ended = true;
                    }
                    _ => {}
                }
                if event.id.is_some() {
                    last_id = event.id;
                }
            }
            if ended {
                break;
            }
        }
        counters.open.dec();
        counters.reconnects.inc();
    }
    out
}

pub async fn run(env: &Env, args: Args) -> anyhow::Result<()> {
    let load = procfs::loadavg();
    let (course, clients) = Course::prepare(env, &args.load, "s").await?;
    let host =
        env.url().strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{}: only http:// is spoken", env.url()))?;
    let addr = tokio::net::lookup_host(host).await?.next().ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
    let path = format!("/api/realtime/stream?streams=messages:{}:{}", course.id, course.start);
    let target = Target { addr, host: host.to_owned(), path };
    let counters = Counters::default();
    let warmup_until = Max::default();
    warmup_until.set(i64::MAX);
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let tasks: Vec<_> = clients
        .iter()
        .map(|user| {
            tokio::spawn(subscriber(
                target.clone(),
                user.token.clone(),
                course.start,
                phase_rx.clone(),
                counters.clone(),
                warmup_until.clone(),
                env.timeout,
            ))
        })
        .collect();
    let progress = Progress::start(
        format!("{} sse", env.label),
        vec![
            ("open", counters.open.clone()),
            ("events", counters.events.clone()),
            ("reconnects", counters.reconnects.clone()),
            ("errors", counters.errors.clone()),
        ],
        env.server_pids(),
    );
    let open_at_start = wait_for_clients(&counters.open, clients.len()).await;
    let measured = course.measure(env, &args.load, &warmup_until, &phase_tx, tasks).await?;
    drop(progress);
    let extras = [
        ("openAtStart", json!(open_at_start)),
        ("streamErrors", json!(measured.tally.errors)),
        ("reconnects", json!(counters.reconnects.get())),
    ];
    measured.report(env, "sse", &args.load, args.p99_limit_ms, json!({}), extras, load);
    Ok(())
}
