//! The engine of the `fanout` and `rooms` scenarios: joined subscribers split into
//! groups, one task per group; senders among them send at a paced rate; every
//! subscriber tracks its course's `seq`s, repairs gaps with `join {since}`, and
//! records send->receive latency from the time embedded in each message. Each
//! subscriber connects to one of the server's nodes (one node unless the server is a
//! cluster); what the nodes spent is measured over the sending.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use coursecast_client::raw::{RawFrame, RawWriter};
use futures_util::{StreamExt, stream::SelectAll};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    Env,
    conn::{Dialer, Joined},
    nodes::{Meter, NodeReport},
    progress::{Counter, Max, Progress},
    seqtrack::{Live, SeqTracker},
    stats::{Latency, LatencySummary},
    wire,
};

/// Longest a write to one socket may block its group.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// One subscriber to connect: whose token, which course, whether it also sends, and
/// to which node (an index into `Env::nodes`).
#[derive(Clone)]
pub struct MemberSpec {
    pub token: String,
    pub course: usize,
    pub sender: bool,
    pub node: usize,
}

pub struct ChatPlan {
    pub courses: Vec<String>,
    pub members: Vec<MemberSpec>,
    /// Messages per second, all senders together.
    pub rate: f64,
    pub traffic: Traffic,
    /// Also measure each node's Redis traffic (its `/metrics` cluster counters).
    pub cluster_traffic: bool,
}

/// How a chat scenario sends and waits; the flags `fanout` and `rooms` share.
#[derive(clap::Args, Debug, Clone)]
pub struct Traffic {
    /// Seconds of sending (per step of a sweep).
    #[arg(long, default_value_t = 15)]
    pub duration: u64,
    /// Seconds at the start whose messages are not timed.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Characters of message content.
    #[arg(long, default_value_t = 100)]
    pub content_len: usize,
    /// Sockets per generator task.
    #[arg(long, default_value_t = 50)]
    pub group_size: usize,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds to wait for the last acks, and again for repairs, after sending stops.
    #[arg(long, default_value_t = 20)]
    pub drain: u64,
}

impl Traffic {
    /// `params` of a scenario's JSON line with these flags added.
    pub fn with_params(&self, mut params: serde_json::Value) -> serde_json::Value {
        params["durationSecs"] = self.duration.into();
        params["warmupSecs"] = self.warmup.into();
        params["contentLen"] = self.content_len.into();
        params
    }
}

/// Pacing: how many sends are due at `elapsed` for `rate` per second, given `sent`.
pub fn due(rate: f64, elapsed: Duration, sent: u64) -> u64 {
    let target = (rate * elapsed.as_secs_f64()).floor() as u64;
    target.saturating_sub(sent)
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    /// Connected, draining what arrives (presence), not sending.
    Wait,
    Send {
        start: Instant,
    },
    /// Sending stopped; waiting for acks.
    Quiet,
    /// Final heads known: repair until every subscriber has everything.
    Settle,
    Stop,
}

#[derive(Clone, Default)]
struct Shared {
    sent: Counter,
    acked: Counter,
    ack_errors: Counter,
    delivered: Counter,
    repaired: Counter,
    gaps: Counter,
    repair_joins: Counter,
    disconnects: Counter,
    answered: Counter,
    last_ack_us: Max,
}

struct Member {
    writer: Option<RawWriter>,
    course: usize,
    node: usize,
    sender: bool,
    tracker: SeqTracker,
    next_ack: u64,
}

enum Pending {
    Send { sent_us: u64, course: usize },
    Repair,
}

#[derive(Default)]
struct GroupOutcome {
    delivery: Latency,
    live: Latency,
    ack: Latency,
    ack_errors: BTreeMap<String, u64>,
    expected: u64,
    /// `expected`, per node.
    expected_by_node: BTreeMap<usize, u64>,
    live_delivered: u64,
    missed_live: u64,
    lost: u64,
    repaired: u64,
    duplicates: u64,
    overlap: u64,
    gaps: u64,
    presence: u64,
    other_frames: u64,
    disconnects: u64,
    beyond_head: u64,
}

struct Group {
    id: usize,
    members: Vec<Member>,
    courses: Arc<Vec<String>>,
    heads: Arc<Vec<Max>>,
    rate: f64,
    content_len: usize,
    run: String,
    warmup_until_us: Arc<Max>,
    shared: Shared,
    pending: HashMap<(usize, u64), Pending>,
    out: GroupOutcome,
    sent: u64,
    next_sender: usize,
}

impl Group {
    fn senders(&self) -> impl Iterator<Item = usize> + '_ {
        self.members.iter().enumerate().filter(|(_, m)| m.sender && m.writer.is_some()).map(|(i, _)| i)
    }

    /// Records `now - sent` into `hist` unless the message was sent during warmup.
    fn record(&mut self, sent_us: Option<u64>, now_us: u64, hist: HistKind) {
        let Some(sent) = sent_us else { return };
        if sent < self.warmup_until_us.get().max(0) as u64 {
            return;
        }
        let micros = now_us.saturating_sub(sent);
        match hist {
            HistKind::Delivery => self.out.delivery.record_micros(micros),
            HistKind::Live => self.out.live.record_micros(micros),
            HistKind::Ack => self.out.ack.record_micros(micros),
        }
    }

    async fn emit(&mut self, idx: usize, event: &str, data: &Value, pending: Pending) {
        let member = &mut self.members[idx];
        let Some(writer) = &mut member.writer else { return };
        let id = member.next_ack;
        member.next_ack += 1;
        // A server that stops reading must not hang the group: the socket counts as lost.
        let sent = tokio::time::timeout(WRITE_TIMEOUT, writer.emit(event, data, Some(id))).await;
        if matches!(sent, Ok(Ok(()))) {
            self.pending.insert((idx, id), pending);
        } else {
            self.drop_member(idx);
        }
    }

    fn drop_member(&mut self, idx: usize) {
        if self.members[idx].writer.take().is_some() {
            self.out.disconnects += 1;
            self.shared.disconnects.inc();
        }
    }

    async fn repair(&mut self, idx: usize, since: i64) {
        let course = self.courses[self.members[idx].course].clone();
        self.shared.repair_joins.inc();
        self.emit(idx, "join", &json!({"courseId": course, "since": since}), Pending::Repair).await;
    }

    async fn send_due(&mut self, start: Instant) {
        let n = due(self.rate, start.elapsed(), self.sent);
        let senders: Vec<usize> = self.senders().collect();
        if senders.is_empty() {
            return;
        }
        for _ in 0..n.min(10_000) {
            let idx = senders[self.next_sender % senders.len()];
            self.next_sender += 1;
            self.sent += 1;
            let now = wire::now_micros();
            let tag = format!("g{}n{}", self.id, self.sent);
            let course = self.members[idx].course;
            let data = json!({
                "courseId": self.courses[course],
                "content": wire::content(now, &tag, self.content_len),
                "clientMsgId": format!("{}-{tag}", self.run),
            });
            self.shared.sent.inc();
            self.emit(idx, "send", &data, Pending::Send { sent_us: now, course }).await;
        }
    }

    async fn on_frame(&mut self, idx: usize, frame: RawFrame) {
        let now = wire::now_micros();
        match frame {
            RawFrame::Ping => {
                if let Some(writer) = &mut self.members[idx].writer
                    && !matches!(tokio::time::timeout(WRITE_TIMEOUT, writer.pong()).await, Ok(Ok(())))
                {
                    self.drop_member(idx);
                }
            }
            RawFrame::Event(text) => match wire::message(&text) {
                Some((seq, sent)) => {
                    let outcome = self.members[idx].tracker.on_live(seq);
                    if let Live::Fresh { repair_since } = outcome {
                        self.shared.delivered.inc();
                        self.record(sent, now, HistKind::Delivery);
                        self.record(sent, now, HistKind::Live);
                        if let Some(since) = repair_since {
                            self.shared.gaps.inc();
                            self.repair(idx, since).await;
                        }
                    }
                }
                None if wire::event_name(&text) == Some("presence") => self.out.presence += 1,
                None => self.out.other_frames += 1,
            },
            RawFrame::Ack { id, text } => {
                let Some(pending) = self.pending.remove(&(idx, id)) else { return };
                let body = text.find('[').map(|at| &text[at..]).unwrap_or_default();
                let answer: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                let answer = &answer[0];
                let ok = answer["ok"] == json!(true);
                match pending {
                    Pending::Send { sent_us, course } => {
                        self.shared.answered.inc();
                        if ok {
                            self.shared.acked.inc();
                            self.shared.last_ack_us.observe(now as i64);
                            if let Some(seq) = answer["event"]["seq"].as_i64() {
                                self.heads[course].observe(seq);
                            }
                            self.record(Some(sent_us), now, HistKind::Ack);
                        } else {
                            self.shared.ack_errors.inc();
                            let code = answer["error"]["code"].as_str().unwrap_or("undecodable").to_owned();
                            *self.out.ack_errors.entry(code).or_default() += 1;
                        }
                    }
                    Pending::Repair => {
                        let course = self.members[idx].course;
                        let upto = self.heads[course].get();
                        if !ok {
                            *self.out.ack_errors.entry(format!("repair:{}", answer["error"]["code"])).or_default() += 1;
                            self.members[idx].tracker.repairing = false;
                            return;
                        }
                        for event in answer["missed"].as_array().map(Vec::as_slice).unwrap_or_default() {
                            let Some(seq) = event["seq"].as_i64() else { continue };
                            if self.members[idx].tracker.on_replayed(seq) {
                                self.shared.repaired.inc();
                                let sent = event["content"].as_str().and_then(wire::sent_of);
                                self.record(sent, now, HistKind::Delivery);
                            }
                        }
                        let cursor = answer["cursor"].as_i64().unwrap_or(0);
                        let has_more = answer["hasMore"] == json!(true);
                        let tracker = &mut self.members[idx].tracker;
                        let upto = upto.max(tracker.max_seen);
                        if let Some(since) = tracker.repair_page_done(cursor, has_more, upto) {
                            self.repair(idx, since).await;
                        }
                    }
                }
            }
            RawFrame::Closed | RawFrame::Disconnect => self.drop_member(idx),
            RawFrame::Other(_) => self.out.other_frames += 1,
        }
    }

    /// Settle: ask each incomplete subscriber to repair; returns how many are incomplete.
    async fn settle(&mut self) -> u64 {
        let mut incomplete = 0;
        for idx in 0..self.members.len() {
            if self.members[idx].writer.is_none() {
                continue;
            }
            let head = self.heads[self.members[idx].course].get();
            if self.members[idx].tracker.first_missing(head).is_none() {
                continue;
            }
            incomplete += 1;
            if let Some(since) = self.members[idx].tracker.start_repair(head) {
                self.repair(idx, since).await;
            }
        }
        incomplete
    }

    fn finish(mut self) -> GroupOutcome {
        for member in &self.members {
            let head = self.heads[member.course].get();
            let t = &member.tracker;
            let expected = u64::try_from(head - t.base()).unwrap_or(0);
            self.out.expected += expected;
            *self.out.expected_by_node.entry(member.node).or_default() += expected;
            self.out.lost += t.missing(head);
            self.out.missed_live += t.missed_live(head);
            self.out.live_delivered += t.live;
            self.out.repaired += t.repaired;
            self.out.duplicates += t.duplicates;
            self.out.overlap += t.overlap;
            self.out.gaps += t.gaps;
            self.out.beyond_head += u64::try_from(t.max_seen - head).unwrap_or(0);
        }
        self.out
    }
}

#[derive(Clone, Copy)]
enum HistKind {
    Delivery,
    Live,
    Ack,
}

async fn run_group(
    mut group: Group,
    mut readers: SelectAll<
        futures_util::stream::BoxStream<'static, (usize, Result<RawFrame, coursecast_client::ClientError>)>,
    >,
    mut phase: watch::Receiver<Phase>,
    incomplete_slot: Arc<std::sync::atomic::AtomicU64>,
) -> GroupOutcome {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut settle_tick = tokio::time::interval(Duration::from_millis(250));
    let has_senders = group.senders().next().is_some();
    let mut current = phase.borrow().clone();
    loop {
        let sending = matches!(current, Phase::Send { .. }) && has_senders;
        let settling = current == Phase::Settle;
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() { break; }
                current = phase.borrow_and_update().clone();
                if current == Phase::Stop { break; }
            }
            // Sends come before reads: a group busy reading must not fall behind its rate.
            _ = tick.tick(), if sending => {
                if let Phase::Send { start } = current { group.send_due(start).await; }
            }
            Some((idx, frame)) = readers.next(), if !readers.is_empty() => match frame {
                Ok(frame) => group.on_frame(idx, frame).await,
                Err(_) => group.drop_member(idx),
            },
            _ = settle_tick.tick(), if settling => {
                let n = group.settle().await;
                incomplete_slot.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    group.finish()
}

/// What a chat run measured.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatOutcome {
    pub subscribers: usize,
    pub senders: usize,
    pub connect_failures: BTreeMap<String, u64>,
    pub target_rate: f64,
    pub duration_secs: f64,
    pub sent: u64,
    pub send_rate: f64,
    pub acked: u64,
    /// Acked (stored and committed) events per second, first send to last ack.
    pub stored_per_sec: f64,
    pub ack_errors: BTreeMap<String, u64>,
    pub unanswered: u64,
    pub expected_deliveries: u64,
    pub delivered_live: u64,
    pub delivered_per_sec: f64,
    pub missed_live: u64,
    pub repaired: u64,
    pub lost_after_repair: u64,
    pub duplicates: u64,
    pub replay_overlap: u64,
    pub gaps: u64,
    pub repair_joins: u64,
    pub disconnects: u64,
    pub presence_events: u64,
    /// First arrival of each event at each subscriber (live or repaired).
    pub latency: LatencySummary,
    /// Live deliveries only.
    pub live_latency: LatencySummary,
    pub ack_latency: LatencySummary,
    pub settled: bool,
    pub cpu: crate::procfs::CpuUse,
    /// Server CPU (every node's) over the sending, per copy the subscribers were owed.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Each node: its subscribers, CPU, memory and (when asked) Redis traffic.
    pub nodes: Vec<NodeReport>,
    #[serde(skip)]
    pub histogram: Latency,
}

pub async fn run(env: &Env, title: &str, plan: ChatPlan) -> anyhow::Result<ChatOutcome> {
    let dialers: Arc<Vec<Dialer>> =
        Arc::new(env.nodes.iter().map(|node| Dialer::new(&node.url, env.timeout, env.source_ips)).collect());
    anyhow::ensure!(plan.members.iter().all(|m| m.node < dialers.len()), "a member's node is not among the URLs");
    let courses = Arc::new(plan.courses.clone());
    // Connect everyone first.
    let connected = Counter::default();
    let progress = Progress::start(format!("{title} connect"), vec![("joined", connected.clone())], env.server_pids());
    let specs = plan.members.clone();
    let results: Vec<(usize, Result<Joined, String>)> = futures_util::stream::iter(specs.into_iter().enumerate())
        .map(|(i, spec)| {
            let dialers = dialers.clone();
            let courses = courses.clone();
            let connected = connected.clone();
            async move {
                let r = dialers[spec.node].connect_join(&spec.token, &courses[spec.course]).await;
                if r.is_ok() {
                    connected.inc();
                }
                (i, r)
            }
        })
        .buffer_unordered(plan.traffic.concurrency.max(1))
        .collect()
        .await;
    drop(progress);
    let mut joined: Vec<Option<Joined>> = (0..plan.members.len()).map(|_| None).collect();
    let mut connect_failures = BTreeMap::new();
    for (i, r) in results {
        match r {
            Ok(j) => joined[i] = Some(j),
            Err(kind) => *connect_failures.entry(kind).or_insert(0u64) += 1,
        }
    }
    let subscribers = joined.iter().flatten().count();
    anyhow::ensure!(subscribers > 0, "no subscriber could connect: {connect_failures:?}");
    let mut subscribers_by_node = vec![0; env.nodes.len()];
    for (spec, _) in plan.members.iter().zip(&joined).filter(|(_, j)| j.is_some()) {
        subscribers_by_node[spec.node] += 1;
    }

    let shared = Shared::default();
    let heads: Arc<Vec<Max>> = Arc::new(plan.courses.iter().map(|_| Max::default()).collect());
    let warmup_until = Arc::new(Max::default());
    warmup_until.observe(i64::MAX);
    let run_id = format!("r{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros());
    // Groups of consecutive members; each group's send rate is its share of senders.
    let total_senders = plan.members.iter().zip(&joined).filter(|(m, j)| m.sender && j.is_some()).count();
    anyhow::ensure!(total_senders > 0, "no sender could connect");
    let (phase_tx, phase_rx) = watch::channel(Phase::Wait);
    let mut tasks = Vec::new();
    let mut slots = Vec::new();
    let mut pairs: Vec<(MemberSpec, Option<Joined>)> = plan.members.iter().cloned().zip(joined).collect();
    for (gid, chunk) in pairs.chunks_mut(plan.traffic.group_size.max(1)).enumerate() {
        let mut members = Vec::new();
        let mut readers = SelectAll::new();
        for (spec, joined) in chunk.iter_mut() {
            let Some(j) = joined.take() else { continue };
            let (writer, reader) = j.socket.split();
            let idx = members.len();
            readers.push(reader.map(move |f| (idx, f)).boxed());
            members.push(Member {
                writer: Some(writer),
                course: spec.course,
                node: spec.node,
                sender: spec.sender,
                tracker: SeqTracker::new(j.cursor),
                next_ack: 1,
            });
        }
        let group_senders = members.iter().filter(|m| m.sender).count();
        let group = Group {
            id: gid,
            members,
            courses: courses.clone(),
            heads: heads.clone(),
            rate: plan.rate * group_senders as f64 / total_senders as f64,
            content_len: plan.traffic.content_len,
            run: run_id.clone(),
            warmup_until_us: warmup_until.clone(),
            shared: shared.clone(),
            pending: HashMap::new(),
            out: GroupOutcome::default(),
            sent: 0,
            next_sender: 0,
        };
        let slot = Arc::new(std::sync::atomic::AtomicU64::new(0));
        slots.push(slot.clone());
        tasks.push(tokio::spawn(run_group(group, readers, phase_rx.clone(), slot)));
    }

    // Let the join-time presence broadcasts pass before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let progress = Progress::start(
        title.to_owned(),
        vec![
            ("sent", shared.sent.clone()),
            ("acked", shared.acked.clone()),
            ("delivered", shared.delivered.clone()),
            ("gaps", shared.gaps.clone()),
            ("repaired", shared.repaired.clone()),
            ("disc", shared.disconnects.clone()),
        ],
        env.server_pids(),
    );
    let meter = Meter::start(env, plan.cluster_traffic).await?;
    let start = Instant::now();
    let start_us = wire::now_micros();
    warmup_until.set(i64::try_from(start_us + plan.traffic.warmup * 1_000_000)?);
    phase_tx.send_replace(Phase::Send { start });
    tokio::time::sleep(Duration::from_secs(plan.traffic.duration)).await;
    // Sending stops before the nodes are read: a busy node may take a while to
    // answer its /metrics, and nothing may be sent outside the window.
    phase_tx.send_replace(Phase::Quiet);
    let window = meter.read(env).await?;
    let deadline = Instant::now() + Duration::from_secs(plan.traffic.drain);
    while shared.answered.get() < shared.sent.get() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    phase_tx.send_replace(Phase::Settle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut settled = false;
    while Instant::now() < deadline + Duration::from_secs(plan.traffic.drain) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let incomplete: u64 = slots.iter().map(|s| s.load(std::sync::atomic::Ordering::Relaxed)).sum();
        if incomplete == 0 {
            // Two quiet reads in a row: nothing left to repair.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slots.iter().all(|s| s.load(std::sync::atomic::Ordering::Relaxed) == 0) {
                settled = true;
                break;
            }
        }
    }
    phase_tx.send_replace(Phase::Stop);
    drop(progress);
    let mut total = GroupOutcome::default();
    for task in tasks {
        let g = task.await?;
        total.delivery.merge(&g.delivery);
        total.live.merge(&g.live);
        total.ack.merge(&g.ack);
        for (k, v) in g.ack_errors {
            *total.ack_errors.entry(k).or_default() += v;
        }
        total.expected += g.expected;
        for (node, n) in g.expected_by_node {
            *total.expected_by_node.entry(node).or_default() += n;
        }
        total.live_delivered += g.live_delivered;
        total.missed_live += g.missed_live;
        total.lost += g.lost;
        total.repaired += g.repaired;
        total.duplicates += g.duplicates;
        total.overlap += g.overlap;
        total.gaps += g.gaps;
        total.presence += g.presence;
        total.disconnects += g.disconnects;
        total.beyond_head += g.beyond_head;
    }
    let secs = plan.traffic.duration as f64;
    let deliveries_by_node: Vec<u64> =
        (0..env.nodes.len()).map(|node| total.expected_by_node.get(&node).copied().unwrap_or(0)).collect();
    let (server_cpu_us_per_delivery, nodes) = window.per_delivery(&subscribers_by_node, &deliveries_by_node);
    let ack_span = (shared.last_ack_us.get() as f64 - start_us as f64) / 1e6;
    let round = |v: f64| (v * 10.0).round() / 10.0;
    Ok(ChatOutcome {
        subscribers,
        senders: total_senders,
        connect_failures,
        target_rate: plan.rate,
        duration_secs: secs,
        sent: shared.sent.get(),
        send_rate: round(shared.sent.get() as f64 / secs),
        acked: shared.acked.get(),
        stored_per_sec: round(if ack_span > 0.0 { shared.acked.get() as f64 / ack_span.max(secs) } else { 0.0 }),
        ack_errors: total.ack_errors,
        unanswered: shared.sent.get().saturating_sub(shared.answered.get()),
        expected_deliveries: total.expected,
        delivered_live: total.live_delivered,
        delivered_per_sec: round(total.live_delivered as f64 / secs),
        missed_live: total.missed_live,
        repaired: total.repaired,
        lost_after_repair: total.lost,
        duplicates: total.duplicates,
        replay_overlap: total.overlap,
        gaps: total.gaps,
        repair_joins: shared.repair_joins.get(),
        disconnects: total.disconnects,
        presence_events: total.presence,
        latency: total.delivery.summary(),
        live_latency: total.live.summary(),
        ack_latency: total.ack.summary(),
        settled,
        cpu: window.cpu,
        server_cpu_us_per_delivery,
        nodes,
        histogram: total.delivery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_catches_up_but_never_runs_ahead() {
        assert_eq!(due(1000.0, Duration::from_millis(0), 0), 0);
        assert_eq!(due(1000.0, Duration::from_millis(10), 0), 10);
        assert_eq!(due(1000.0, Duration::from_millis(10), 10), 0);
        assert_eq!(due(1000.0, Duration::from_millis(10), 12), 0);
        assert_eq!(due(100.0, Duration::from_millis(1005), 95), 5);
        assert_eq!(due(20_000.0, Duration::from_secs(2), 39_000), 1_000);
    }
}
