//! `coursecast healthcheck`: one `GET /healthz` to a running server, with a deadline,
//! for container health checks (the runtime image has no curl). Exit status 0 when
//! the server answers 200 in time, non-zero otherwise.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Why the server is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("no answer from {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("cannot reach {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("{0} answered {1:?}")]
    Status(SocketAddr, String),
}

/// Where to reach a server listening on `host:port`: a wildcard address is reached
/// over loopback.
pub fn target(host: IpAddr, port: u16) -> SocketAddr {
    let host = match host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(host, port)
}

/// Asks `addr` for `/healthz`; healthy only on a 200 within `deadline`.
pub async fn check(addr: SocketAddr, deadline: Duration) -> Result<(), Unhealthy> {
    let status_line = tokio::time::timeout(deadline, status_line(addr))
        .await
        .map_err(|_| Unhealthy::Timeout(addr, deadline))?
        .map_err(|e| Unhealthy::Io(addr, e))?;
    // "HTTP/1.1 200 OK"
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(Unhealthy::Status(addr, status_line))
    }
}

async fn status_line(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The status line is all we need; the body is a few bytes anyway.
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !head.contains(&b'\n') {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_probed_over_loopback() {
        assert_eq!(target("0.0.0.0".parse().unwrap(), 3000), "127.0.0.1:3000".parse().unwrap());
        assert_eq!(target("::".parse().unwrap(), 3000), "[::1]:3000".parse().unwrap());
        assert_eq!(target("10.0.0.5".parse().unwrap(), 80), "10.0.0.5:80".parse().unwrap());
    }
}
