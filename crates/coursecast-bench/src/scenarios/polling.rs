//! `polling`: N HTTP clients long-polling `GET /api/realtime/messages/:courseId?since=
//! <cursor>&wait=W` in a loop while senders `POST` to the same course at a total rate
//! R. Reports event->response latency (from the send time embedded in the content)
//! and losses (every client must see every `seq` after its start cursor).

use std::{
    borrow::Cow,
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    Env, chat,
    keepalive::KeepAlive,
    procfs::{self, CpuMeter},
    progress::{Counter, Max, Progress},
    report,
    seqtrack::{Live, SeqTracker},
    stats::Latency,
    wire,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// `wait` of each poll, seconds.
    #[arg(long, default_value_t = 25.0)]
    pub wait: f64,
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    #[arg(long, default_value_t = 100)]
    pub content_len: usize,
    /// Students (after the polling clients) that post.
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
    /// Seconds to wait for clients to catch up after sending stops.
    #[arg(long, default_value_t = 30)]
    pub drain: u64,
    /// p99 event->response target, ms.
    #[arg(long, default_value_t = 100.0)]
    pub p99_limit_ms: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Run,
    /// Every client exits once its cursor reaches this head.
    Settle(i64),
}

#[derive(Clone, Default)]
struct Counters {
    polls: Counter,
    events: Counter,
    errors: Counter,
    in_flight: Counter,
    done: Counter,
}

struct ClientOutcome {
    latency: Latency,
    tracker: SeqTracker,
    errors: BTreeMap<String, u64>,
}

/// A page as the generator reads it: only what it checks.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    events: Vec<PagedEvent<'a>>,
    cursor: i64,
}

#[derive(Deserialize)]
struct PagedEvent<'a> {
    seq: i64,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
}

#[allow(clippy::too_many_arguments)]
async fn poller(
    mut http: KeepAlive,
    token: String,
    course: String,
    start: i64,
    wait: f64,
    mut phase: watch::Receiver<Phase>,
    counters: Counters,
    warmup_until: Max,
    timeout: Duration,
) -> ClientOutcome {
    let mut out = ClientOutcome { latency: Latency::new(), tracker: SeqTracker::new(start), errors: BTreeMap::new() };
    let mut cursor = start;
    loop {
        if let Phase::Settle(head) = *phase.borrow_and_update()
            && cursor >= head
        {
            break;
        }
        let path = format!("/api/realtime/messages/{course}?since={cursor}&wait={wait}");
        counters.in_flight.add(1);
        let response = tokio::select! {
            r = http.get(&path, &token, timeout + Duration::from_secs_f64(wait)) => r,
            () = caught_up(&mut phase, cursor) => {
                counters.in_flight.dec();
                break;
            }
        };
        counters.in_flight.dec();
        counters.polls.inc();
        let failure = match response {
            Ok((200, body)) => match serde_json::from_slice::<Page>(&body) {
                Ok(page) => {
                    let now = wire::now_micros();
                    for event in &page.events {
                        if let Live::Fresh { .. } = out.tracker.on_live(event.seq) {
                            counters.events.inc();
                            if let Some(sent) = event.content.as_deref().and_then(wire::sent_of)
                                && sent >= warmup_until.get() as u64
                            {
                                out.latency.record_micros(now.saturating_sub(sent));
                            }
                        }
                    }
                    cursor = cursor.max(page.cursor);
                    None
                }
                Err(_) => Some("undecodable".to_owned()),
            },
            Ok((status, _)) => Some(format!("http_{status}")),
            Err(failure) => Some(failure.label().to_owned()),
        };
        if let Some(kind) = failure {
            counters.errors.inc();
            *out.errors.entry(kind).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    counters.done.inc();
    out
}

/// Resolves once the run is settling and `cursor` has reached the final head.
async fn caught_up(phase: &mut watch::Receiver<Phase>, cursor: i64) {
    let reached = phase.wait_for(|p| matches!(p, Phase::Settle(head) if cursor >= *head)).await.is_ok();
    if !reached {
        std::future::pending::<()>().await;
    }
}

/// Where and how to POST messages.
#[derive(Clone)]
struct Poster {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

/// POSTs one message; returns its `seq`.
async fn post(poster: &Poster, token: &str, course: &str, content: String, key: String) -> Result<i64, String> {
    let response = poster
        .http
        .post(format!("{}/api/realtime/messages/{course}", poster.url))
        .bearer_auth(token)
        .timeout(poster.timeout)
        .json(&json!({"content": content, "clientMsgId": key}))
        .send()
        .await
        .map_err(|e| if e.is_timeout() { "timeout".to_owned() } else { "request".to_owned() })?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.map_err(|_| "undecodable".to_owned())?;
    if status != 201 {
        return Err(body["error"]["code"].as_str().map_or_else(|| format!("http_{status}"), str::to_owned));
    }
    body["event"]["seq"].as_i64().ok_or_else(|| "no_seq".to_owned())
}

pub async fn run(env: &Env, args: Args) -> anyhow::Result<()> {
    let load = procfs::loadavg();
    let users = env.users(args.clients + args.senders.max(1))?;
    let (pollers, senders) = users.split_at(args.clients);
    let course = env.seed.course_id.clone();
    let run_id = format!("p{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros());
    let poster = Poster { http: env.http.clone(), url: env.url.clone(), timeout: env.timeout };
    // The start cursor: one message posted before the clients start.
    let start = post(&poster, &senders[0].token, &course, wire::content(0, "start", 20), format!("{run_id}-start"))
        .await
        .map_err(|e| anyhow::anyhow!("the first POST failed: {e}"))?;

    let counters = Counters::default();
    let warmup_until = Max::default();
    warmup_until.set(i64::MAX);
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let mut tasks = Vec::with_capacity(args.clients);
    for user in pollers {
        tasks.push(tokio::spawn(poller(
            KeepAlive::new(&env.url).await?,
            user.token.clone(),
            course.clone(),
            start,
            args.wait,
            phase_rx.clone(),
            counters.clone(),
            warmup_until.clone(),
            env.timeout,
        )));
    }
    let progress = Progress::start(
        format!("{} polling", env.label),
        vec![
            ("polls", counters.polls.clone()),
            ("waiting", counters.in_flight.clone()),
            ("events", counters.events.clone()),
            ("errors", counters.errors.clone()),
        ],
        env.server_pid,
    );
    // Wait until (nearly) every client has a poll waiting.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while (counters.in_flight.get() as usize) < args.clients && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting_at_start = counters.in_flight.get();

    let cpu = CpuMeter::start(env.server_pid);
    let (sent, acked) = (Counter::default(), Counter::default());
    let head = Max::default();
    head.observe(start);
    let post_errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let started = Instant::now();
    warmup_until.set(i64::try_from(wire::now_micros() + args.warmup * 1_000_000)?);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(args.duration) {
        tick.tick().await;
        for _ in 0..chat::due(args.rate, started.elapsed(), n) {
            n += 1;
            let sender = &senders[n as usize % senders.len()];
            let token = sender.token.clone();
            let (course, sent, acked, head, errors) =
                (course.clone(), sent.clone(), acked.clone(), head.clone(), post_errors.clone());
            let key = format!("{run_id}-{n}");
            let poster = poster.clone();
            let content = wire::content(wire::now_micros(), &format!("p{n}"), args.content_len);
            sent.inc();
            tokio::spawn(async move {
                match post(&poster, &token, &course, content, key).await {
                    Ok(seq) => {
                        acked.inc();
                        head.observe(seq);
                    }
                    Err(kind) => *errors.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_default() += 1,
                }
            });
        }
    }
    let cpu_use = cpu.read();
    let deadline = Instant::now() + Duration::from_secs(args.drain);
    let answered = || acked.get() + post_errors.lock().unwrap_or_else(|p| p.into_inner()).values().sum::<u64>();
    while answered() < sent.get() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let final_head = head.get();
    phase_tx.send_replace(Phase::Settle(final_head));
    let mut latency = Latency::new();
    let (mut lost, mut duplicates, mut received, mut expected) = (0u64, 0u64, 0u64, 0u64);
    let mut errors = BTreeMap::<String, u64>::new();
    let mut settled = true;
    // One deadline for all clients: a client still short of the head by then counts as lost.
    let settle_by = tokio::time::Instant::from_std(deadline.max(Instant::now()) + Duration::from_secs(5));
    for task in tasks {
        match tokio::time::timeout_at(settle_by, task).await {
            Ok(Ok(out)) => {
                latency.merge(&out.latency);
                lost += out.tracker.missing(final_head);
                duplicates += out.tracker.duplicates;
                received += out.tracker.live;
                expected += u64::try_from(final_head - start).unwrap_or(0);
                for (k, v) in out.errors {
                    *errors.entry(k).or_default() += v;
                }
            }
            _ => {
                settled = false;
                lost += u64::try_from(final_head - start).unwrap_or(0);
                expected += u64::try_from(final_head - start).unwrap_or(0);
            }
        }
    }
    drop(progress);
    let summary = latency.summary();
    env.write_svg("polling", &latency);
    let post_errors = post_errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let met = summary.p99_ms < args.p99_limit_ms && lost == 0 && post_errors.is_empty() && args.clients >= 5000;
    report(
        env,
        "polling",
        json!({"clients": args.clients, "rate": args.rate, "durationSecs": args.duration, "wait": args.wait,
               "senders": args.senders, "warmupSecs": args.warmup}),
        json!({
            "waitingAtStart": waiting_at_start,
            "sent": sent.get(),
            "acked": acked.get(),
            "postErrors": post_errors,
            "expectedDeliveries": expected,
            "received": received,
            "lost": lost,
            "duplicates": duplicates,
            "pollErrors": errors,
            "polls": counters.polls.get(),
            "latency": summary,
            "settled": settled,
            "cpu": cpu_use,
            "met": met,
        }),
        load,
    );
    Ok(())
}
