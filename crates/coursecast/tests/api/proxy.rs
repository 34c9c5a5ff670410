//! A TCP proxy between the server and a real dependency, for fault tests: it
//! forwards, resets every connection (and each new one), or black-holes them (holds
//! every byte, answers nothing, until it forwards again, when the held bytes go on).

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::watch,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    /// Connections are closed with a RST, new ones at once.
    Reset,
    /// Packets are held: nothing arrives, nothing fails.
    BlackHole,
    /// Every chunk is passed on this long after it was read (a slow link).
    Delay(std::time::Duration),
}

pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let mode = watch::Sender::new(Mode::Forward);
        let modes = mode.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, modes.clone()));
            }
        });
        Self { addr, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Closing with linger 0 sends a RST instead of a FIN.
fn resettable(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn relay(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    resettable(&client);
    if forwarding(&mut mode).await == Mode::Reset {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    resettable(&server);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending (or a reset) ends both: dropping the halves resets.
    tokio::select! {
        () = pump(client_read, server_write, mode.clone()) => {}
        () = pump(server_read, client_write, mode) => {}
    }
}

/// Waits while black-holed; `Forward` or `Reset`.
async fn forwarding(mode: &mut watch::Receiver<Mode>) -> Mode {
    loop {
        let now = *mode.borrow_and_update();
        if now != Mode::BlackHole {
            return now;
        }
        if mode.changed().await.is_err() {
            return Mode::Reset;
        }
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        if forwarding(&mut mode).await == Mode::Reset {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // Bytes read just as the hole opened are held with the rest.
        match forwarding(&mut mode).await {
            Mode::Reset => return,
            Mode::Delay(delay) => tokio::time::sleep(delay).await,
            Mode::Forward | Mode::BlackHole => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
