//! The real server binary as a process of its own: for what an in-process server
//! cannot show (its log lines as written, a `kill -9`).

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use uuid::Uuid;

use crate::helpers::eventually;

const SECRET: &str = "process-test-secret-0123456789abcdef";

/// A server process on a fixed port, its log lines collected as they come.
pub struct ServerProcess {
    child: Option<Child>,
    pub base: String,
    port: u16,
    env: Vec<(String, String)>,
    lines: Arc<Mutex<Vec<String>>>,
    pub data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts the binary on SQLite in a fresh data directory, or on `database_url`,
    /// with `extra` settings, and waits until it answers.
    pub async fn start(database_url: Option<&str>, extra: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data_dir = std::env::temp_dir().join(format!("coursecast-process-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&data_dir).expect("data directory");
        let mut env: Vec<(String, String)> = [
            ("HOST", "127.0.0.1"),
            ("JWT_SECRET", SECRET),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "info"),
            ("SOCKET_CONNECTS_PER_SECOND_PER_IP", "100000"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        env.push(("PORT".into(), port.to_string()));
        env.push(("DATA_DIR".into(), data_dir.display().to_string()));
        if let Some(url) = database_url {
            env.push(("DATABASE_URL".into(), url.to_owned()));
        }
        let mut server =
            Self { child: None, base: format!("http://127.0.0.1:{port}"), port, env, lines: Arc::default(), data_dir };
        server.spawn().await;
        server
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_coursecast"));
        command.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    async fn spawn(&mut self) {
        let mut child =
            self.command().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the server binary");
        for output in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = self.lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        self.child = Some(child);
        let client = reqwest::Client::new();
        let health = format!("{}/healthz", self.base);
        eventually("the server to listen", Duration::from_secs(30), || {
            let request = client.get(&health).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
    }

    /// Runs `coursecast seed` on the same storage and returns its JSON.
    pub fn seed(&self, students: usize) -> serde_json::Value {
        let out = self.data_dir.join(format!("seed-{}.json", Uuid::new_v4()));
        let run = self
            .command()
            .args(["seed", "--students", &students.to_string(), "--out", out.to_str().unwrap()])
            .output()
            .expect("run seed");
        let said = String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "seed failed: {said}");
        serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
    }

    /// SIGKILL: no shutdown, no drain, nothing flushed on the way out.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// Starts the binary again on the same storage and port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        assert_eq!(self.base, format!("http://127.0.0.1:{}", self.port));
        self.spawn().await;
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
