//! coursecast's load generator (BENCHMARKS.md). It speaks Socket.IO v5 over WebSocket
//! through `coursecast-client`'s lean [`raw`](coursecast_client::raw) sockets, many per
//! task, and HTTP through reqwest; it authenticates with the tokens of
//! `coursecast seed --out FILE`, so it runs unchanged against coursecast and against
//! the Node baseline (`bench/baseline-node`).
//!
//! Each scenario prints a line of progress per second to stderr, then a human summary
//! and exactly one JSON line (starting with `{`) to stdout.

pub mod chat;
pub mod churn;
pub mod conn;
pub mod eventstream;
pub mod hold;
pub mod http;
pub mod keepalive;
pub mod nodes;
pub mod procfs;
pub mod progress;
pub mod scenarios;
pub mod seqtrack;
pub mod stats;
pub mod svg;
pub mod wire;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The generator's command line.
#[derive(Parser, Debug)]
#[command(name = "coursecast-bench", about = "Load generator for coursecast and its Node baseline")]
pub struct Cli {
    /// Server base URL; several (repeated, or a comma list) are the nodes of one
    /// cluster, which `fanout` spreads its subscribers over.
    #[arg(long, global = true, value_delimiter = ',', default_value = "http://127.0.0.1:3000")]
    pub url: Vec<String>,
    /// The JSON written by `coursecast seed --students N --out FILE`.
    #[arg(long, global = true, default_value = "seed.json")]
    pub seed: PathBuf,
    /// The server's pid: its CPU and resident memory are read from /proc. With
    /// several URLs, one pid per URL in the same order.
    #[arg(long, global = true, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// A name for the server under test, copied into the report.
    #[arg(long, global = true, default_value = "server")]
    pub label: String,
    /// Timeout of every step (connect, handshake, ack, request), seconds.
    #[arg(long, global = true, default_value_t = 15.0)]
    pub timeout_secs: f64,
    /// Connect from 127.0.0.1..N (loopback servers) to spread source ports.
    #[arg(long, global = true, default_value_t = 1)]
    pub source_ips: u8,
    /// Write latency percentile plots (SVG) into this directory.
    #[arg(long, global = true)]
    pub svg_dir: Option<PathBuf>,
    /// Worker threads of the generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    pub threads: usize,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// N authenticated connections to /chat, each joining a course: rate and timings.
    Connect(scenarios::connect::Args),
    /// N joined connections held; server memory per connection.
    Idle(scenarios::idle::Args),
    /// N subscribers of one course, K senders at total rate R (a comma list sweeps).
    Fanout(scenarios::fanout::Args),
    /// M courses of P members, total rate R: latency and stored events per second.
    Rooms(scenarios::rooms::Args),
    /// N long-polling HTTP clients while a sender posts at rate R.
    Polling(scenarios::polling::Args),
    /// N Server-Sent Events streams on one course while a sender posts at rate R
    /// (coursecast only).
    Sse(scenarios::sse::Args),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect(_) => "connect",
            Scenario::Idle(_) => "idle",
            Scenario::Fanout(_) => "fanout",
            Scenario::Rooms(_) => "rooms",
            Scenario::Polling(_) => "polling",
            Scenario::Sse(_) => "sse",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seed {
    pub course_id: String,
    pub admin: SeedUser,
    pub professor: SeedUser,
    pub users: Vec<SeedUser>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeedUser {
    pub id: String,
    pub token: String,
}

/// What every scenario gets.
pub struct Env {
    /// The server under test: one node, or (fanout only) the nodes of a cluster.
    pub nodes: Vec<nodes::Node>,
    pub seed: Seed,
    pub label: String,
    pub timeout: Duration,
    pub source_ips: u8,
    pub svg_dir: Option<PathBuf>,
    pub http: reqwest::Client,
}

impl Env {
    /// The server's URL (a cluster's first node).
    pub fn url(&self) -> &str {
        &self.nodes[0].url
    }

    /// The server's pid (a cluster's first node's).
    pub fn server_pid(&self) -> Option<u32> {
        self.nodes[0].pid
    }

    /// Every node's URL, comma-separated as `--url` takes them.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|node| node.url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Every node's pid, when given.
    pub fn server_pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|node| node.pid).collect()
    }

    /// The first `n` seeded students, or an error naming how many to seed.
    pub fn users(&self, n: usize) -> anyhow::Result<&[SeedUser]> {
        self.seed.users.get(..n).with_context(|| {
            format!("the seed has {} students; {n} are needed (coursecast seed --students {n})", self.seed.users.len())
        })
    }

    /// Writes `DIR/<label>-<name>.svg` when `--svg-dir` is set.
    pub fn write_svg(&self, name: &str, latency: &stats::Latency) {
        let Some(dir) = &self.svg_dir else { return };
        let title = format!("{} {name}: send -> receive latency", self.label);
        let path = dir.join(format!("{}-{name}.svg", self.label));
        if let Err(e) =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, svg::percentile_plot(&title, latency)))
        {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}

/// Runs the chosen scenario.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    wire::start_clock();
    let (soft, hard) = procfs::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    let seed: Seed = serde_json::from_slice(
        &std::fs::read(&cli.seed).with_context(|| format!("reading the seed file {}", cli.seed.display()))?,
    )
    .context("parsing the seed file")?;
    let timeout = Duration::from_secs_f64(cli.timeout_secs);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(timeout)
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .build()?;
    let nodes = nodes::pair(&cli.url, &cli.server_pid)?;
    if nodes.len() > 1 && !matches!(cli.scenario, Scenario::Fanout(_)) {
        return Err(nodes::NodesError::OneNodeOnly { scenario: cli.scenario.name() }.into());
    }
    let env = Env {
        nodes,
        seed,
        label: cli.label.clone(),
        timeout,
        source_ips: cli.source_ips,
        svg_dir: cli.svg_dir.clone(),
        http,
    };
    eprintln!("coursecast-bench: {} at {} (fd limit {soft}/{hard})", env.label, env.urls());
    match cli.scenario {
        Scenario::Connect(args) => scenarios::connect::run(&env, args).await,
        Scenario::Idle(args) => scenarios::idle::run(&env, args).await,
        Scenario::Fanout(args) => scenarios::fanout::run(&env, args).await,
        Scenario::Rooms(args) => scenarios::rooms::run(&env, args).await,
        Scenario::Polling(args) => scenarios::polling::run(&env, args).await,
        Scenario::Sse(args) => scenarios::sse::run(&env, args).await,
    }
}

/// Prints the human summary and the one JSON line of a scenario run.
pub fn report(env: &Env, scenario: &str, params: Value, results: Value, load_at_start: Option<[f64; 3]>) {
    let mut line = Map::new();
    line.insert("scenario".into(), json!(scenario));
    line.insert("label".into(), json!(env.label));
    line.insert("url".into(), json!(env.urls()));
    line.insert("params".into(), params);
    line.insert("loadAtStart".into(), json!(load_at_start));
    line.insert("results".into(), results);
    let line = Value::Object(line);
    println!("== {scenario} on {} ==", env.label);
    let mut flat = Vec::new();
    flatten("", &line["params"], &mut flat);
    flatten("", &line["results"], &mut flat);
    for (key, value) in flat {
        println!("  {key:<32} {value}");
    }
    println!("{line}");
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        Value::Object(_) => out.push((prefix.to_owned(), "{}".into())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}
