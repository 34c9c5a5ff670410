//! A TCP proxy between the server and a real dependency, for fault tests: it
//! forwards, resets every connection (and each new one), refuses connections (its
//! port closed, as when the dependency is down), or black-holes them (holds every
//! byte, answers nothing, until it forwards again, when the held bytes go on).

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
    /// Connections are closed with a RST and the port is closed: a new connection
    /// is refused, as by a host whose service is down.
    Refuse,
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
        tokio::spawn(accept(listener, upstream, mode.subscribe()));
        Self { addr, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Accepts and relays connections; while refusing, the port is closed, and it is
/// bound again (the same address) once the mode changes.
async fn accept(mut listener: TcpListener, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let addr = listener.local_addr().expect("proxy addr");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { return };
                tokio::spawn(relay(client, upstream, mode.clone()));
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                if *mode.borrow_and_update() != Mode::Refuse {
                    continue;
                }
                drop(listener);
                while *mode.borrow_and_update() == Mode::Refuse {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                listener = TcpListener::bind(addr).await.expect("bind the proxy's port again");
            }
        }
    }
}

/// Closing with linger 0 sends a RST instead of a FIN.
fn resettable(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn relay(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    resettable(&client);
    if cuts(forwarding(&mut mode).await) {
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

/// Whether the mode ends open connections.
fn cuts(mode: Mode) -> bool {
    matches!(mode, Mode::Reset | Mode::Refuse)
}

/// Waits while black-holed; then the mode that holds.
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
        if cuts(forwarding(&mut mode).await) {
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
            now if cuts(now) => return,
            Mode::Delay(delay) => tokio::time::sleep(delay).await,
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
