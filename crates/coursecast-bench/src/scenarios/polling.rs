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
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::{
    Env, SeedUser, chat,
    keepalive::KeepAlive,
    procfs::{self, CpuMeter, CpuUse},
    progress::{Counter, Max, Progress},
    report,
    seqtrack::{Live, SeqTracker},
    stats::Latency,
    wire,
};

/// The load of the HTTP-transport scenarios (this one and `sse`): clients reading
/// one course while senders post to it.
#[derive(clap::Args, Debug, Clone)]
pub struct Load {
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    #[arg(long, default_value_t = 100)]
    pub content_len: usize,
    /// Students (after the reading clients) that post.
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
    /// Seconds to wait for clients to catch up after sending stops.
    #[arg(long, default_value_t = 30)]
    pub drain: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub load: Load,
    /// `wait` of each poll, seconds.
    #[arg(long, default_value_t = 25.0)]
    pub wait: f64,
    /// p99 event->response target, ms.
    #[arg(long, default_value_t = 100.0)]
    pub p99_limit_ms: f64,
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Phase {
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

pub(crate) struct ClientOutcome {
    pub latency: Latency,
    pub tracker: SeqTracker,
    pub errors: BTreeMap<String, u64>,
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
pub(crate) async fn caught_up(phase: &mut watch::Receiver<Phase>, cursor: i64) {
    let reached = phase.wait_for(|p| matches!(p, Phase::Settle(head) if cursor >= *head)).await.is_ok();
    if !reached {
        std::future::pending::<()>().await;
    }
}

/// Where and how to POST messages.
#[derive(Clone)]
pub(crate) struct Poster {
    pub http: reqwest::Client,
    pub url: String,
    pub timeout: Duration,
}

/// POSTs one message; returns its `seq`.
pub(crate) async fn post(
    poster: &Poster,
    token: &str,
    course: &str,
    content: String,
    key: String,
) -> Result<i64, String> {
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
    let (course, pollers) = Course::prepare(env, &args.load, "p").await?;
    let counters = Counters::default();
    let warmup_until = Max::default();
    warmup_until.set(i64::MAX);
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let mut tasks = Vec::with_capacity(pollers.len());
    for user in pollers {
        tasks.push(tokio::spawn(poller(
            KeepAlive::new(env.url()).await?,
            user.token.clone(),
            course.id.clone(),
            course.start,
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
        env.server_pids(),
    );
    // Wait until (nearly) every client has a poll waiting.
    let waiting_at_start = wait_for_clients(&counters.in_flight, pollers.len()).await;
    let measured = course.measure(env, &args.load, &warmup_until, &phase_tx, tasks).await?;
    drop(progress);
    let extras = [
        ("waitingAtStart", json!(waiting_at_start)),
        ("pollErrors", json!(measured.tally.errors)),
        ("polls", json!(counters.polls.get())),
    ];
    measured.report(env, "polling", &args.load, args.p99_limit_ms, json!({"wait": args.wait}), extras, load);
    Ok(())
}

/// The course a run reads and posts to, and who posts.
pub(crate) struct Course<'a> {
    pub id: String,
    /// The start cursor: one message posted before the clients start.
    pub start: i64,
    poster: Poster,
    run_id: String,
    senders: &'a [SeedUser],
}

impl<'a> Course<'a> {
    /// Posts the first message; returns the course and the reading clients.
    pub async fn prepare(env: &'a Env, load: &Load, tag: &str) -> anyhow::Result<(Self, &'a [SeedUser])> {
        let users = env.users(load.clients + load.senders.max(1))?;
        let (clients, senders) = users.split_at(load.clients);
        let poster = Poster { http: env.http.clone(), url: env.url().to_owned(), timeout: env.timeout };
        let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros();
        let run_id = format!("{tag}{micros:x}");
        let id = env.seed.course_id.clone();
        let start = post(&poster, &senders[0].token, &id, wire::content(0, "start", 20), format!("{run_id}-start"))
            .await
            .map_err(|e| anyhow::anyhow!("the first POST failed: {e}"))?;
        Ok((Self { id, start, poster, run_id, senders }, clients))
    }

    /// Sends at the load's rate, waits for the answers, lets the clients settle at
    /// the final head, and collects what they saw.
    pub async fn measure(
        &self,
        env: &Env,
        load: &Load,
        warmup_until: &Max,
        phase: &watch::Sender<Phase>,
        tasks: Vec<tokio::task::JoinHandle<ClientOutcome>>,
    ) -> anyhow::Result<Measured> {
        let (cpu, started) = (CpuMeter::start(&env.server_pids()), Instant::now());
        let sending = self.send_at_rate(load, warmup_until).await?;
        let (cpu, sending_secs) = (cpu.read(), started.elapsed().as_secs_f64());
        let (final_head, deadline) = sending.settle(load.drain).await;
        phase.send_replace(Phase::Settle(final_head));
        let tally = tally(tasks, self.start, final_head, deadline).await;
        Ok(Measured { cpu, sending_secs, sending, tally })
    }

    /// POSTs messages with their send time embedded at the load's rate for its
    /// duration, the senders in turn; latencies count from `warmup` seconds on.
    async fn send_at_rate(&self, load: &Load, warmup_until: &Max) -> anyhow::Result<Sending> {
        let sending = Sending {
            sent: Counter::default(),
            acked: Counter::default(),
            head: Max::default(),
            post_errors: Arc::new(Mutex::new(BTreeMap::new())),
        };
        sending.head.observe(self.start);
        let started = Instant::now();
        warmup_until.set(i64::try_from(wire::now_micros() + load.warmup * 1_000_000)?);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(load.duration) {
            tick.tick().await;
            for _ in 0..chat::due(load.rate, started.elapsed(), n) {
                n += 1;
                let sender = &self.senders[n as usize % self.senders.len()];
                let token = sender.token.clone();
                let (course, acked, head, errors) =
                    (self.id.clone(), sending.acked.clone(), sending.head.clone(), sending.post_errors.clone());
                let key = format!("{}-{n}", self.run_id);
                let poster = self.poster.clone();
                let content = wire::content(wire::now_micros(), &format!("p{n}"), load.content_len);
                sending.sent.inc();
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
        Ok(sending)
    }
}

/// A run's figures.
pub(crate) struct Measured {
    pub cpu: CpuUse,
    /// Wall time of the sending, over which `cpu` was measured.
    pub sending_secs: f64,
    pub sending: Sending,
    pub tally: Tally,
}

impl Measured {
    /// Writes the latency plot and reports the run: the load, `params`, the results
    /// both scenarios share, `extras`, and whether the target was met.
    #[allow(clippy::too_many_arguments)]
    pub fn report<const N: usize>(
        &self,
        env: &Env,
        scenario: &str,
        load: &Load,
        p99_limit_ms: f64,
        mut params: Value,
        extras: [(&str, Value); N],
        load_at_start: Option<[f64; 3]>,
    ) {
        env.write_svg(scenario, &self.tally.latency);
        let l = load;
        let given = json!({"clients": l.clients, "rate": l.rate, "durationSecs": l.duration,
                           "senders": l.senders, "warmupSecs": l.warmup});
        if let (Some(params), Value::Object(given)) = (params.as_object_mut(), given) {
            params.extend(given);
        }
        let mut results = self.results();
        results.extend(extras.into_iter().map(|(k, v)| (k.to_owned(), v)));
        results.insert("met".into(), json!(self.met(p99_limit_ms, load.clients)));
        report(env, scenario, params, Value::Object(results), load_at_start);
    }

    fn results(&self) -> Map<String, Value> {
        let (sending, tally) = (&self.sending, &self.tally);
        let mut results = Map::new();
        results.insert("sent".into(), json!(sending.sent.get()));
        results.insert("acked".into(), json!(sending.acked.get()));
        results.insert("postErrors".into(), json!(sending.post_errors()));
        results.insert("expectedDeliveries".into(), json!(tally.expected));
        results.insert("received".into(), json!(tally.received));
        results.insert("lost".into(), json!(tally.lost));
        results.insert("duplicates".into(), json!(tally.duplicates));
        results.insert("latency".into(), json!(tally.latency.summary()));
        results.insert("settled".into(), json!(tally.settled));
        results.insert("cpu".into(), json!(self.cpu));
        // The transport's cost per copy, comparable across transports and rates: server
        // CPU over the sending, divided by the copies the clients were owed.
        let per_delivery = procfs::cpu_us_per(self.cpu.server_pct, self.sending_secs, tally.expected);
        results.insert("serverCpuUsPerDelivery".into(), json!(per_delivery));
        results
    }

    /// Whether the design target holds: p99 under `p99_limit_ms` with at least 5,000
    /// clients, nothing lost or repeated, every POST answered.
    fn met(&self, p99_limit_ms: f64, clients: usize) -> bool {
        self.tally.latency.summary().p99_ms < p99_limit_ms
            && self.tally.lost == 0
            && self.tally.duplicates == 0
            && self.sending.post_errors().is_empty()
            && clients >= 5000
    }
}

/// Waits (up to 30 s) until `gauge` reaches `clients`, then a second more; its value then.
pub(crate) async fn wait_for_clients(gauge: &Counter, clients: usize) -> u64 {
    let ready_by = Instant::now() + Duration::from_secs(30);
    while (gauge.get() as usize) < clients && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    gauge.get()
}

/// What the senders did.
pub(crate) struct Sending {
    pub sent: Counter,
    pub acked: Counter,
    head: Max,
    post_errors: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Sending {
    pub fn post_errors(&self) -> BTreeMap<String, u64> {
        self.post_errors.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits (up to `drain` seconds) for every POST to be answered; the final head
    /// and the deadline the clients have to reach it.
    pub async fn settle(&self, drain: u64) -> (i64, Instant) {
        let deadline = Instant::now() + Duration::from_secs(drain);
        let answered = || self.acked.get() + self.post_errors().values().sum::<u64>();
        while answered() < self.sent.get() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (self.head.get(), deadline)
    }
}

/// What every client saw, together.
pub(crate) struct Tally {
    pub latency: Latency,
    pub lost: u64,
    pub duplicates: u64,
    pub received: u64,
    pub expected: u64,
    pub errors: BTreeMap<String, u64>,
    pub settled: bool,
}

/// Collects every client's outcome; one deadline for all (a few seconds after
/// `deadline`): a client still short of the head by then counts as lost.
pub(crate) async fn tally(
    tasks: Vec<tokio::task::JoinHandle<ClientOutcome>>,
    start: i64,
    final_head: i64,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally {
        latency: Latency::new(),
        lost: 0,
        duplicates: 0,
        received: 0,
        expected: 0,
        errors: BTreeMap::new(),
        settled: true,
    };
    let window = u64::try_from(final_head - start).unwrap_or(0);
    let settle_by = tokio::time::Instant::from_std(deadline.max(Instant::now()) + Duration::from_secs(5));
    for task in tasks {
        tally.expected += window;
        match tokio::time::timeout_at(settle_by, task).await {
            Ok(Ok(out)) => {
                tally.latency.merge(&out.latency);
                tally.lost += out.tracker.missing(final_head);
                tally.duplicates += out.tracker.duplicates;
                tally.received += out.tracker.live;
                for (k, v) in out.errors {
                    *tally.errors.entry(k).or_default() += v;
                }
            }
            _ => {
                tally.settled = false;
                tally.lost += window;
            }
        }
    }
    tally
}
