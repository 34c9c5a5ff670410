//! The server nodes under test (`--url` and `--server-pid`, one of each per node, in
//! the same order) and what they spent over a measured window: CPU and resident
//! memory from /proc, and, for coursecast nodes running with Redis, the cluster
//! traffic each one counts on its own `/metrics` (docs/OPERATIONS.md, "Several
//! nodes"). Figures are per node and per delivery, so runs on 1, 2 and 3 nodes
//! compare although they share one machine's cores.

use std::time::Instant;

use serde::Serialize;

use crate::{
    Env,
    procfs::{self, CpuMeter, CpuUse},
};

/// One server process under test.
#[derive(Debug, Clone)]
pub struct Node {
    pub url: String,
    pub pid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    #[error("{pids} --server-pid for {urls} --url: give one pid per URL, in the same order, or none")]
    PidsPerUrl { urls: usize, pids: usize },
    #[error("{scenario} runs on one node: give one --url (several nodes: fanout only)")]
    OneNodeOnly { scenario: &'static str },
    #[error("reading {url}/metrics: {source}")]
    Scrape {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}/metrics answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}/metrics has no coursecast_cluster_scopes: is the node running with REDIS_URL?")]
    NoCluster { url: String },
}

/// Pairs the URLs with the pids: none, or one per URL.
pub fn pair(urls: &[String], pids: &[u32]) -> Result<Vec<Node>, NodesError> {
    if !pids.is_empty() && pids.len() != urls.len() {
        return Err(NodesError::PidsPerUrl { urls: urls.len(), pids: pids.len() });
    }
    Ok(urls
        .iter()
        .enumerate()
        .map(|(i, url)| Node { url: url.trim_end_matches('/').to_owned(), pid: pids.get(i).copied() })
        .collect())
}

/// A node's cluster counters at one moment, or their increase over a window. `in`
/// is what other nodes relayed to it (its own messages coming back are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCounters {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Channels (courses, users) the node subscribes to (at a window's end).
    pub scopes: u64,
}

/// The cluster counters in a Prometheus text page. A counter the page does not show
/// yet (nothing relayed so far) is 0; without the scopes gauge the node has no
/// cluster at all.
fn parse_cluster(page: &str) -> Option<ClusterCounters> {
    let mut counters = ClusterCounters::default();
    let mut scopes = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let value = value as u64;
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let inward = labels.contains("direction=\"in\"");
        match name {
            "coursecast_cluster_bytes_total" if inward => counters.bytes_in = value,
            "coursecast_cluster_bytes_total" => counters.bytes_out = value,
            "coursecast_cluster_messages_total" if inward => counters.messages_in = value,
            "coursecast_cluster_messages_total" => counters.messages_out = value,
            "coursecast_cluster_scopes" => scopes = Some(value),
            _ => {}
        }
    }
    scopes.map(|scopes| ClusterCounters { scopes, ..counters })
}

async fn scrape(env: &Env, node: &Node) -> Result<ClusterCounters, NodesError> {
    let url = &node.url;
    let failed = |source| NodesError::Scrape { url: url.clone(), source };
    let response = env.http.get(format!("{url}/metrics")).timeout(env.timeout).send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(NodesError::Status { url: url.clone(), status: response.status().as_u16() });
    }
    let page = response.text().await.map_err(failed)?;
    parse_cluster(&page).ok_or_else(|| NodesError::NoCluster { url: url.clone() })
}

async fn scrape_all(env: &Env) -> Result<Vec<ClusterCounters>, NodesError> {
    let mut all = Vec::with_capacity(env.nodes.len());
    for node in &env.nodes {
        all.push(scrape(env, node).await?);
    }
    Ok(all)
}

/// Measures the nodes from [`Meter::start`] to [`Meter::read`].
pub struct Meter {
    started: Instant,
    cpu: CpuMeter,
    /// With cluster traffic asked for: every node's counters at the start.
    cluster: Option<Vec<ClusterCounters>>,
}

impl Meter {
    /// Starts the window; with `cluster`, every node's `/metrics` must show its
    /// cluster counters.
    pub async fn start(env: &Env, cluster: bool) -> Result<Self, NodesError> {
        let cluster = if cluster { Some(scrape_all(env).await?) } else { None };
        Ok(Self { started: Instant::now(), cpu: CpuMeter::start(&env.server_pids()), cluster })
    }

    pub async fn read(&self, env: &Env) -> Result<Window, NodesError> {
        let (cpu, each) = self.cpu.read_each();
        let secs = self.started.elapsed().as_secs_f64();
        let after = match &self.cluster {
            Some(_) => Some(scrape_all(env).await?),
            None => None,
        };
        let nodes = env
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| Spent {
                url: node.url.clone(),
                cpu_pct: each.get(i).copied().flatten(),
                rss_kib: node.pid.and_then(|pid| procfs::rss_kib(Some(pid))),
                cluster: self.cluster.as_ref().zip(after.as_ref()).map(|(before, after)| {
                    let (b, a) = (before[i], after[i]);
                    let delta = |b: u64, a: u64| a.saturating_sub(b);
                    ClusterCounters {
                        bytes_in: delta(b.bytes_in, a.bytes_in),
                        bytes_out: delta(b.bytes_out, a.bytes_out),
                        messages_in: delta(b.messages_in, a.messages_in),
                        messages_out: delta(b.messages_out, a.messages_out),
                        scopes: a.scopes,
                    }
                }),
            })
            .collect();
        Ok(Window { cpu, secs, nodes })
    }
}

/// What a [`Meter`] measured.
pub struct Window {
    /// The generator, all nodes together, and steal.
    pub cpu: CpuUse,
    secs: f64,
    nodes: Vec<Spent>,
}

struct Spent {
    url: String,
    cpu_pct: Option<f64>,
    rss_kib: Option<u64>,
    /// The counters' increase over the window (scopes: at its end).
    cluster: Option<ClusterCounters>,
}

/// One node's figures in a scenario's report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub url: String,
    pub subscribers: usize,
    /// Copies this node's subscribers were owed over the run.
    pub expected_deliveries: u64,
    pub cpu_pct: Option<f64>,
    pub cpu_us_per_delivery: Option<f64>,
    #[serde(rename = "rssKiB")]
    pub rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterTraffic>,
}

/// A node's Redis traffic over the window, as its `/metrics` counts it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTraffic {
    #[serde(flatten)]
    pub counters: ClusterCounters,
    pub bytes_in_per_delivery: Option<f64>,
    pub bytes_out_per_delivery: Option<f64>,
}

impl Window {
    /// Server CPU µs per delivery over all nodes, and each node's figures, given the
    /// subscribers on each node and the deliveries they were owed.
    pub fn per_delivery(&self, subscribers: &[usize], deliveries: &[u64]) -> (Option<f64>, Vec<NodeReport>) {
        let total = procfs::cpu_us_per(self.cpu.server_pct, self.secs, deliveries.iter().sum());
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, spent)| {
                let deliveries = deliveries.get(i).copied().unwrap_or(0);
                let per =
                    |bytes: u64| (deliveries > 0).then(|| (bytes as f64 / deliveries as f64 * 1000.0).round() / 1000.0);
                NodeReport {
                    url: spent.url.clone(),
                    subscribers: subscribers.get(i).copied().unwrap_or(0),
                    expected_deliveries: deliveries,
                    cpu_pct: spent.cpu_pct,
                    cpu_us_per_delivery: procfs::cpu_us_per(spent.cpu_pct, self.secs, deliveries),
                    rss_kib: spent.rss_kib,
                    cluster: spent.cluster.map(|c| ClusterTraffic {
                        counters: c,
                        bytes_in_per_delivery: per(c.bytes_in),
                        bytes_out_per_delivery: per(c.bytes_out),
                    }),
                }
            })
            .collect();
        (total, nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE coursecast_cluster_bytes_total counter
coursecast_cluster_bytes_total{direction=\"out\"} 52000
coursecast_cluster_bytes_total{direction=\"in\"} 104000
coursecast_cluster_messages_total{direction=\"in\"} 200
coursecast_cluster_messages_total{direction=\"out\"} 100
# TYPE coursecast_cluster_scopes gauge
coursecast_cluster_scopes 1001
coursecast_cluster_relay_dropped_total{reason=\"outbox_full\"} 3
";

    #[test]
    fn reads_the_cluster_counters_by_direction() {
        let c = parse_cluster(PAGE).expect("a cluster page");
        assert_eq!(
            c,
            ClusterCounters { bytes_in: 104_000, bytes_out: 52_000, messages_in: 200, messages_out: 100, scopes: 1001 }
        );
    }

    #[test]
    fn counters_not_shown_yet_are_zero_and_no_scopes_is_no_cluster() {
        let fresh = parse_cluster("coursecast_cluster_scopes 3\n").expect("a cluster page");
        assert_eq!(fresh, ClusterCounters { scopes: 3, ..ClusterCounters::default() });
        assert_eq!(parse_cluster("coursecast_http_requests_total{route=\"/\"} 5\n"), None);
    }

    #[test]
    fn pids_pair_with_urls_or_are_left_out() {
        let urls = ["http://a:1/".to_owned(), "http://b:2".to_owned()];
        let nodes = pair(&urls, &[10, 20]).expect("one pid per URL");
        assert_eq!((nodes[0].url.as_str(), nodes[1].pid), ("http://a:1", Some(20)));
        assert!(pair(&urls, &[]).expect("no pids").iter().all(|n| n.pid.is_none()));
        assert!(matches!(pair(&urls, &[10]), Err(NodesError::PidsPerUrl { urls: 2, pids: 1 })));
    }

    #[test]
    fn each_node_is_judged_by_its_own_deliveries() {
        let spent = |cpu_pct, bytes_in| Spent {
            url: "u".into(),
            cpu_pct: Some(cpu_pct),
            rss_kib: None,
            cluster: Some(ClusterCounters { bytes_in, bytes_out: 500, messages_in: 1, messages_out: 1, scopes: 1 }),
        };
        let cpu = CpuUse { server_pct: Some(150.0), ..CpuUse::default() };
        let window = Window { cpu, secs: 10.0, nodes: vec![spent(100.0, 0), spent(50.0, 1000)] };
        let (total, nodes) = window.per_delivery(&[10, 10], &[100_000, 50_000]);
        // 1.5 cores for 10 s over 150,000 copies.
        assert_eq!(total, Some(100.0));
        assert_eq!(nodes[0].cpu_us_per_delivery, Some(100.0));
        assert_eq!(nodes[1].cpu_us_per_delivery, Some(100.0));
        let redis = nodes[1].cluster.as_ref().expect("cluster traffic");
        assert_eq!((redis.bytes_in_per_delivery, redis.bytes_out_per_delivery), (Some(0.02), Some(0.01)));
    }
}
