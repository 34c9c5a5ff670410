//! The deployment files agree with each other, with the docs and with the server:
//! compose.yaml mounts the nginx config that docs/OPERATIONS.md points to, nginx's
//! upstream servers are compose's coursecast services on their ports, compose passes
//! only real settings, the nodes trust nginx's X-Forwarded-For and nobody else's, the image runs the README's production command, and the
//! image's HEALTHCHECK command passes against a running server and fails against a
//! dead one. (No container engine here: `scripts/check-nginx` proves the nginx
//! config parses with nginx itself.)

use std::{
    collections::BTreeSet,
    net::IpAddr,
    process::{Command, Output},
    time::{Duration, Instant},
};

use coursecast::{Settings, http::client_ip::TrustedProxies};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use serde_json::Value;

use crate::helpers::{TestApp, repo_root};

const NGINX_CONF: &str = "deploy/nginx.conf";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    serde_norway::from_str(&read("compose.yaml")).expect("compose.yaml parses")
}

/// The services that run this repository's image (`build: .`).
fn coursecast_services(compose: &Value) -> Vec<(&str, &Value)> {
    let services = compose["services"].as_object().expect("services");
    services.iter().filter(|(_, s)| s["build"] == ".").map(|(name, s)| (name.as_str(), s)).collect()
}

/// `host:port` of `server host:port;` lines inside `upstream coursecast { ... }`.
fn upstream_servers(conf: &str) -> Vec<(String, u16)> {
    let block = conf.split("upstream coursecast {").nth(1).expect("an `upstream coursecast` block");
    let block = &block[..block.find('}').expect("the end of the upstream block")];
    block
        .split(';')
        .filter_map(|statement| statement.trim().strip_prefix("server "))
        .map(|address| {
            let (host, port) = address.trim().rsplit_once(':').expect("server host:port");
            (host.to_owned(), port.parse().expect("a port"))
        })
        .collect()
}

/// The commands of the fenced shell blocks of a markdown file, comments and
/// leading `VAR=value` assignments removed, each as its words.
fn shell_commands(markdown: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_block = matches!(line.trim(), "```sh" | "```bash" | "```shell");
            continue;
        }
        if !in_block {
            continue;
        }
        let code = line.split(" #").next().unwrap_or_default().trim_end();
        current.push_str(code.trim_end_matches('\\'));
        current.push(' ');
        if !code.ends_with('\\') {
            let words: Vec<String> = current
                .split_whitespace()
                .skip_while(|w| {
                    w.split_once('=').is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                })
                .map(str::to_owned)
                .collect();
            if !words.is_empty() {
                commands.push(words);
            }
            current.clear();
        }
    }
    commands
}

/// The JSON-array (exec form) argument of a Dockerfile instruction, e.g. `CMD ["serve"]`.
fn dockerfile_exec(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .rev()
        .find(|line| line.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    let array = &line[line.find('[').unwrap_or_else(|| panic!("{instruction} is not in exec form"))..];
    serde_json::from_str(array).unwrap_or_else(|e| panic!("{instruction}: {e}"))
}

fn program_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

#[test]
fn compose_mounts_the_nginx_config_that_operations_points_to() {
    let compose = compose();
    let mounts: Vec<&str> = compose["services"]["nginx"]["volumes"]
        .as_array()
        .expect("nginx volumes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        mounts.iter().any(|m| m.starts_with(&format!("./{NGINX_CONF}:/etc/nginx/conf.d/"))),
        "nginx mounts {NGINX_CONF}: {mounts:?}"
    );
    let operations = read("docs/OPERATIONS.md");
    assert!(operations.contains(&format!("]({}", format_args!("../{NGINX_CONF}"))), "OPERATIONS.md links {NGINX_CONF}");
    assert!(
        !operations.contains("```nginx") && !operations.contains("upstream coursecast"),
        "OPERATIONS.md shows no second copy of the nginx config"
    );
}

#[test]
fn nginx_upstreams_are_the_compose_nodes_on_their_ports() {
    let compose = compose();
    let nodes = coursecast_services(&compose);
    assert!(nodes.len() >= 2, "several coursecast nodes: {nodes:?}");
    let default_port = Settings::defaults().port;
    let expected: BTreeSet<(String, u16)> = nodes
        .iter()
        .map(|(name, service)| {
            let port = service["environment"]["PORT"].as_str().map_or(default_port, |p| p.parse().expect("PORT"));
            ((*name).to_owned(), port)
        })
        .collect();
    let upstream: BTreeSet<(String, u16)> = upstream_servers(&read(NGINX_CONF)).into_iter().collect();
    assert_eq!(upstream, expected, "nginx's upstream servers are compose's coursecast services");
    let services = compose["services"].as_object().expect("services");
    assert!(services.contains_key("postgres") && services.contains_key("redis"), "PostgreSQL and Redis services");
}

#[test]
fn compose_passes_only_real_settings_and_what_several_nodes_need() {
    let compose = compose();
    let settings: BTreeSet<String> = Settings::env_names().into_iter().collect();
    let services = compose["services"].as_object().expect("services");
    for (name, service) in coursecast_services(&compose) {
        let env = service["environment"].as_object().unwrap_or_else(|| panic!("{name}: environment as a map"));
        let unknown: Vec<&String> = env.keys().filter(|k| !settings.contains(*k)).collect();
        assert!(unknown.is_empty(), "{name} sets variables that are not settings of config.rs: {unknown:?}");
        // OPERATIONS.md, "Several nodes": the same PostgreSQL, Redis and JWT secret.
        for needed in ["DATABASE_URL", "REDIS_URL", "JWT_SECRET"] {
            assert!(env.contains_key(needed), "{name} sets {needed}");
        }
        for (variable, service) in [("DATABASE_URL", "postgres"), ("REDIS_URL", "redis")] {
            let url = env[variable].as_str().expect("a URL");
            let host = url.rsplit('@').next().unwrap_or(url).rsplit("://").next().unwrap_or(url);
            let host = host.split([':', '/']).next().unwrap_or_default();
            assert_eq!(host, service, "{name}'s {variable} points at the {service} service");
            assert!(services.contains_key(host));
        }
    }
}

#[test]
fn the_image_runs_the_readme_production_command() {
    let dockerfile = read("Dockerfile");
    let mut command = dockerfile_exec(&dockerfile, "ENTRYPOINT");
    command.extend(dockerfile_exec(&dockerfile, "CMD"));
    assert_eq!(command, ["coursecast", "serve"], "ENTRYPOINT + CMD");
    for doc in ["README.md", "docs/OPERATIONS.md"] {
        // The program may follow settings (`VAR=value ... ./target/release/coursecast serve`).
        let found = shell_commands(&read(doc)).into_iter().any(|words| {
            (0..words.len()).any(|i| program_name(&words[i]) == command[0] && words[i + 1..] == command[1..])
        });
        assert!(found, "{doc} gives `{}` in a shell block", command.join(" "));
    }
    assert!(dockerfile.contains("FROM rust:1.95-bookworm AS build"), "built in rust:1.95-bookworm");
    assert!(dockerfile.lines().any(|l| l.starts_with("USER ") && !l.contains("root")), "runs as a non-root user");
    let runtime = dockerfile.lines().rfind(|l| l.starts_with("FROM ")).expect("a runtime stage");
    assert!(runtime.contains("debian:bookworm-slim") || runtime.contains("distroless/cc"), "a slim runtime: {runtime}");
    let dockerignore = read(".dockerignore");
    let ignored: Vec<&str> = dockerignore.lines().map(str::trim).collect();
    for needed in ["target", "**/node_modules", ".git"] {
        assert!(ignored.contains(&needed), ".dockerignore lists {needed}");
    }
}

/// Runs the Dockerfile's HEALTHCHECK command (its program: this build's binary)
/// with the container's environment pointing at `port`.
fn run_healthcheck(port: u16) -> (Output, Duration) {
    let argv = dockerfile_exec(&read("Dockerfile"), "HEALTHCHECK");
    assert_eq!(argv[0], "coursecast");
    // An empty working directory: no `.env` of the developer's leaks in.
    let cwd = std::env::temp_dir().join(format!("coursecast-healthcheck-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&cwd).expect("a temp dir");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_coursecast"))
        .args(&argv[1..])
        .current_dir(&cwd)
        .env("HOST", "0.0.0.0")
        .env("PORT", port.to_string())
        .output()
        .expect("the coursecast binary runs");
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&cwd);
    (output, elapsed)
}

#[tokio::test]
async fn the_image_healthcheck_passes_on_a_live_server_and_fails_on_a_dead_one() {
    let mut app = TestApp::spawn().await;
    let port = app.addr.port();
    let (output, _) = tokio::task::spawn_blocking(move || run_healthcheck(port)).await.expect("join");
    assert!(output.status.success(), "healthy server: {}", String::from_utf8_lossy(&output.stderr));

    // A listener that accepts and never answers: refused within the deadline (2 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let (output, elapsed) = tokio::task::spawn_blocking(move || run_healthcheck(silent_port)).await.expect("join");
    drop(silent);
    assert!(!output.status.success(), "a server that never answers is unhealthy");
    // Without a deadline this would never end; the bound leaves room for a cold start
    // of the debug binary on a loaded machine, which the 2 s deadline does not cover.
    assert!(elapsed < Duration::from_secs(15), "the check has a deadline: took {elapsed:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no answer"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    app.stop().await;
    let (output, _) = tokio::task::spawn_blocking(move || run_healthcheck(port)).await.expect("join");
    assert!(!output.status.success(), "a stopped server is unhealthy");
}

/// The nodes believe the X-Forwarded-For of nginx (its fixed address in compose's
/// network) and of no other address there, and nginx sends it from every location.
#[test]
fn the_nodes_trust_nginx_alone_and_nginx_forwards_the_client() {
    let compose = compose();
    let address =
        |value: &Value, what: &str| value.as_str().unwrap_or_else(|| panic!("compose gives {what}")).to_owned();
    let nginx: IpAddr =
        address(&compose["services"]["nginx"]["networks"]["default"]["ipv4_address"], "nginx an address")
            .parse()
            .expect("nginx's address");
    let subnet: IpNet = address(&compose["networks"]["default"]["ipam"]["config"][0]["subnet"], "the network a subnet")
        .parse()
        .expect("the subnet");
    assert!(subnet.contains(&nginx), "nginx's {nginx} is in the network's {subnet}");
    let mut forwarded = HeaderMap::new();
    forwarded.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.1"));
    for (name, service) in coursecast_services(&compose) {
        let list = address(&service["environment"]["TRUSTED_PROXIES"], &format!("{name} TRUSTED_PROXIES"));
        let trusted = TrustedProxies::parse(&list).expect("TRUSTED_PROXIES parses");
        assert_eq!(
            trusted.client_of(nginx, &forwarded),
            "203.0.113.1".parse::<IpAddr>().unwrap(),
            "{name} trusts nginx"
        );
        // The gateway (the first host) relays traffic from outside: a client, never a proxy.
        for other in subnet.hosts().take(20).filter(|ip| *ip != nginx) {
            assert_eq!(trusted.client_of(other, &forwarded), other, "{name} trusts {other}");
        }
    }
    let conf = read(NGINX_CONF);
    let locations = conf.matches("\n    location ").count();
    let forwards = conf.matches("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;").count();
    assert!(locations > 0 && forwards == locations, "{forwards} of {locations} nginx locations forward the client");
}
