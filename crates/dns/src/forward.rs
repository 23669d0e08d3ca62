//! Forwarding to the upstream resolvers: a question that is not a cluster name goes,
//! as the client sent it, to each upstream in turn until one answers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream may take to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// How the client reached us; the upstream is asked the same way, so that a TCP
/// client (typically retrying a truncated answer) gets the whole answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Sends `request` to the upstreams in order; returns the first answer whose ID
/// matches the request's.
pub async fn forward(
    upstreams: &[SocketAddr],
    request: &[u8],
    transport: Transport,
) -> Result<Vec<u8>> {
    if upstreams.is_empty() {
        bail!("no upstream resolver is configured (--cluster-dns-upstream)");
    }
    let mut last_error = None;
    for upstream in upstreams {
        let exchange = async {
            match transport {
                Transport::Udp => exchange_udp(*upstream, request).await,
                Transport::Tcp => exchange_tcp(*upstream, request).await,
            }
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(error)) => last_error = Some(error.context(format!("upstream {upstream}"))),
            Err(_) => {
                last_error = Some(anyhow::anyhow!(
                    "upstream {upstream} did not answer within {UPSTREAM_TIMEOUT:?}"
                ))
            }
        }
    }
    Err(last_error.expect("at least one upstream was asked"))
}

async fn exchange_udp(upstream: SocketAddr, request: &[u8]) -> Result<Vec<u8>> {
    let local: SocketAddr = match upstream.ip() {
        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(request).await?;
    let mut buffer = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buffer).await?;
        // A late answer to someone else's question cannot arrive on this fresh
        // socket, but a spoofed one could: only the matching ID counts.
        if len >= 2 && buffer[..2] == request[..2] {
            buffer.truncate(len);
            return Ok(buffer);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, request: &[u8]) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(request.len()).context("request too long for DNS over TCP")?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(request).await?;
    let len = stream.read_u16().await? as usize;
    let mut reply = vec![0u8; len];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// `IP` or `IP:PORT` (IPv6 as `[IP]:PORT`), port 53 by default.
pub fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not IP or IP:PORT (e.g. 127.0.0.1:5353)"))
}

/// The nameservers of a resolv.conf (the host's resolvers: the default upstreams).
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_with_and_without_a_port() {
        assert_eq!(
            parse_upstream("127.0.0.1"),
            Ok("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("127.0.0.2:5353"),
            Ok("127.0.0.2:5353".parse().unwrap())
        );
        assert_eq!(parse_upstream("[::1]:54"), Ok("[::1]:54".parse().unwrap()));
        assert_eq!(parse_upstream("::1"), Ok("[::1]:53".parse().unwrap()));
        assert!(
            parse_upstream("dns.example")
                .unwrap_err()
                .contains("IP:PORT")
        );
    }

    #[test]
    fn nameservers_come_from_resolv_conf() {
        let conf = "# comment\nsearch example\nnameserver 192.0.2.1\nnameserver  ::1\nnameserver bogus\noptions ndots:2\n";
        assert_eq!(
            nameservers(conf),
            vec!["192.0.2.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn no_upstream_is_a_clear_error() {
        let error = forward(&[], &[0; 12], Transport::Udp).await.unwrap_err();
        assert!(error.to_string().contains("--cluster-dns-upstream"));
    }
}
