//! `krust-testserver`: the program inside the `krust/testserver` test image, in the
//! spirit of upstream's agnhost netexec. Tests run it in pods to see, from inside the
//! cluster, who answered (hostname), who asked (client IP), what a pod can reach
//! (dial), what cluster DNS says (dnslookup), and how the node agent reports a
//! container that exits with a given code.
//!
//! HTTP on `--http-port` (default 8080), one request per connection:
//! - `/`, `/hostname`: the pod's hostname
//! - `/echo?msg=M`: `M`
//! - `/clientip`: the peer's `ip:port` as this server sees it
//! - `/header?key=K`: the value of request header `K`
//! - `/healthz`: `ok` with the status set by `/sethealth?status=N` (default 200)
//! - `/exit?code=N`: answers, then exits with code `N`
//! - `/shell?cmd=C`: runs `sh -c C`; JSON `{"output": ..., "exitCode": ...}`
//! - `/dial?request=R&host=H&port=P&protocol=http|udp&tries=N`: sends `R` to `H:P` `N`
//!   times (HTTP: `GET /R`); JSON `{"responses": [...], "errors": [...]}`
//! - `/dnslookup?host=H`: JSON `{"addresses": [...]}`, or status 500 with `{"error": ...}`
//!
//! UDP on `--udp-port` (default 8081, 0 turns it off): datagrams `hostname`,
//! `echo M` and `clientip` get the same answers as over HTTP.
//!
//! Only the standard library, so the binary links statically and the image needs no
//! shared libraries. SIGTERM exits at once (as PID 1 in a container the default action
//! would be ignored).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// How long a dial or an incoming request may take before it is abandoned.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request head this server reads.
const MAX_HEAD: u64 = 64 * 1024;

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("krust-testserver: {message}");
            eprintln!("usage: krust-testserver [--http-port N] [--udp-port N]");
            std::process::exit(2);
        }
    };
    exit_on_sigterm();
    if options.udp_port != 0 {
        let socket = UdpSocket::bind(("0.0.0.0", options.udp_port)).unwrap_or_else(|error| {
            fail(&format!(
                "cannot listen on UDP port {}: {error}",
                options.udp_port
            ))
        });
        std::thread::spawn(move || serve_udp(socket));
    }
    let listener = TcpListener::bind(("0.0.0.0", options.http_port)).unwrap_or_else(|error| {
        fail(&format!(
            "cannot listen on TCP port {}: {error}",
            options.http_port
        ))
    });
    eprintln!(
        "krust-testserver: HTTP on :{}, UDP on :{}",
        options.http_port, options.udp_port
    );
    let health = Arc::new(AtomicU16::new(200));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let health = health.clone();
        std::thread::spawn(move || {
            if let Err(error) = serve_connection(stream, &health) {
                eprintln!("krust-testserver: request failed: {error}");
            }
        });
    }
}

fn fail(message: &str) -> ! {
    eprintln!("krust-testserver: {message}");
    std::process::exit(1);
}

/// Command-line options.
struct Options {
    http_port: u16,
    udp_port: u16,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            http_port: 8080,
            udp_port: 8081,
        };
        while let Some(flag) = args.next() {
            let port = match flag.as_str() {
                "--http-port" => &mut options.http_port,
                "--udp-port" => &mut options.udp_port,
                other => return Err(format!("unknown argument {other:?}")),
            };
            let value = args.next().ok_or(format!("{flag} needs a port number"))?;
            *port = value
                .parse()
                .map_err(|_| format!("{flag}: {value:?} is not a port number"))?;
        }
        Ok(options)
    }
}

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn _exit(status: i32) -> !;
}

extern "C" fn exit_now(_signum: i32) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { _exit(0) }
}

/// Makes SIGTERM end the process.
fn exit_on_sigterm() {
    const SIGTERM: i32 = 15;
    // SAFETY: installs a handler that only calls the async-signal-safe _exit.
    unsafe {
        signal(SIGTERM, exit_now as extern "C" fn(i32) as usize);
    }
}

/// The pod's hostname (the UTS namespace's).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Answers UDP datagrams forever.
fn serve_udp(socket: UdpSocket) {
    let mut buffer = [0u8; 2048];
    loop {
        let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let request = String::from_utf8_lossy(&buffer[..length]);
        let request = request.trim();
        let answer = match request.split_once(' ') {
            Some(("echo", message)) => message.to_string(),
            _ if request == "hostname" => hostname(),
            _ if request == "clientip" => peer.to_string(),
            _ => format!("unknown command {request:?}"),
        };
        let _ = socket.send_to(answer.as_bytes(), peer);
    }
}

/// A parsed HTTP request head.
struct Request {
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What to send back, and whether to exit afterwards.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    exit_code: Option<i32>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: body.into(),
            exit_code: None,
        }
    }

    fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            body,
            exit_code: None,
        }
    }
}

fn serve_connection(stream: TcpStream, health: &AtomicU16) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new((&stream).take(MAX_HEAD));
    let response = match read_request(&mut reader) {
        Ok(request) => handle(&request, peer, health),
        Err(message) => Response::text(400, message),
    };
    let mut stream = &stream;
    write!(
        stream,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        response.body
    )?;
    stream.flush()?;
    if let Some(code) = response.exit_code {
        eprintln!("krust-testserver: exiting with code {code} as asked");
        std::process::exit(code);
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

fn read_request(reader: &mut impl BufRead) -> Result<Request, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|error| format!("cannot read the request: {error}"))?;
    let mut parts = line.split_whitespace();
    let (Some(_method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!("malformed request line {line:?}"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        let read = reader
            .read_line(&mut header)
            .map_err(|error| format!("cannot read the request headers: {error}"))?;
        let header = header.trim_end();
        if read == 0 || header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(Request {
        path: path.to_string(),
        query: parse_query(query),
        headers,
    })
}

/// `a=1&b=x%20y` as pairs, percent- and `+`-decoded.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                match u8::from_str_radix(&text[index + 1..index + 3], 16) {
                    Ok(byte) => {
                        decoded.push(byte);
                        index += 2;
                    }
                    Err(_) => decoded.push(b'%'),
                }
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn handle(request: &Request, peer: SocketAddr, health: &AtomicU16) -> Response {
    match request.path.as_str() {
        "/" | "/hostname" | "/hostName" => Response::text(200, hostname()),
        "/echo" => Response::text(200, request.param("msg").unwrap_or_default()),
        "/clientip" => Response::text(200, peer.to_string()),
        "/header" => match request.param("key").and_then(|key| request.header(key)) {
            Some(value) => Response::text(200, value),
            None => Response::text(404, "no such header"),
        },
        "/healthz" => Response::text(health.load(Ordering::Relaxed), "ok"),
        "/sethealth" => match request.param("status").map(str::parse::<u16>) {
            Some(Ok(status)) if (100..600).contains(&status) => {
                health.store(status, Ordering::Relaxed);
                Response::text(200, format!("/healthz now answers {status}"))
            }
            _ => Response::text(400, "status must be an HTTP status code, e.g. ?status=500"),
        },
        "/exit" => match request.param("code").unwrap_or("0").parse::<i32>() {
            Ok(code) => Response {
                exit_code: Some(code),
                ..Response::text(200, format!("exiting with code {code}"))
            },
            Err(_) => Response::text(400, "code must be a number, e.g. ?code=3"),
        },
        "/shell" => shell(request.param("cmd").unwrap_or_default()),
        "/dial" => dial(request),
        "/dnslookup" => match request.param("host") {
            Some(host) => dns_lookup(host),
            None => Response::text(400, "host is missing, e.g. ?host=kubernetes.default"),
        },
        _ => Response::text(404, format!("no handler for {}", request.path)),
    }
}

fn shell(command: &str) -> Response {
    match Command::new("sh").arg("-c").arg(command).output() {
        Ok(output) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            Response::json(
                200,
                format!(
                    "{{\"output\":{},\"exitCode\":{}}}",
                    json_string(&text),
                    output.status.code().unwrap_or(-1)
                ),
            )
        }
        Err(error) => Response::json(
            500,
            format!(
                "{{\"error\":{}}}",
                json_string(&format!("cannot run sh: {error}"))
            ),
        ),
    }
}

fn dial(request: &Request) -> Response {
    let (Some(host), Some(port)) = (request.param("host"), request.param("port")) else {
        return Response::text(400, "host and port are required");
    };
    let Ok(port) = port.parse::<u16>() else {
        return Response::text(400, "port must be a number");
    };
    let Ok(tries) = request.param("tries").unwrap_or("1").parse::<u32>() else {
        return Response::text(400, "tries must be a number");
    };
    let message = request.param("request").unwrap_or("hostname");
    let protocol = request.param("protocol").unwrap_or("http");
    if protocol != "http" && protocol != "udp" {
        return Response::text(400, "protocol must be http or udp");
    }
    let mut responses = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..tries {
        let result = if protocol == "http" {
            dial_http(host, port, message)
        } else {
            dial_udp(host, port, message)
        };
        match result {
            Ok(answer) => responses.push(json_string(&answer)),
            Err(error) => errors.push(json_string(&error)),
        }
    }
    Response::json(
        200,
        format!(
            "{{\"responses\":[{}],\"errors\":[{}]}}",
            responses.join(","),
            errors.join(",")
        ),
    )
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {host}: {error}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

fn dial_http(host: &str, port: u16, path: &str) -> Result<String, String> {
    let address = resolve(host, port)?;
    let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|error| error.to_string())?;
    write!(
        stream,
        "GET /{} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n",
        path.trim_start_matches('/')
    )
    .map_err(|error| format!("cannot send to {address}: {error}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|error| format!("no answer from {address}: {error}"))?;
    let answer = String::from_utf8_lossy(&answer);
    match answer.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.trim().to_string()),
        None => Err(format!("malformed HTTP answer from {address}")),
    }
}

fn dial_udp(host: &str, port: u16, message: &str) -> Result<String, String> {
    let address = resolve(host, port)?;
    let socket = UdpSocket::bind(("0.0.0.0", 0)).map_err(|error| error.to_string())?;
    socket
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|error| error.to_string())?;
    socket
        .send_to(message.as_bytes(), address)
        .map_err(|error| format!("cannot send to {address}: {error}"))?;
    let mut buffer = [0u8; 2048];
    let length = socket
        .recv(&mut buffer)
        .map_err(|error| format!("no answer from {address}: {error}"))?;
    Ok(String::from_utf8_lossy(&buffer[..length])
        .trim()
        .to_string())
}

fn dns_lookup(host: &str) -> Response {
    match (host, 0).to_socket_addrs() {
        Ok(addresses) => {
            let unique: BTreeSet<String> =
                addresses.map(|address| address.ip().to_string()).collect();
            let list: Vec<String> = unique.iter().map(|ip| json_string(ip)).collect();
            Response::json(200, format!("{{\"addresses\":[{}]}}", list.join(",")))
        }
        Err(error) => Response::json(
            500,
            format!(
                "{{\"error\":{}}}",
                json_string(&format!("cannot resolve {host}: {error}"))
            ),
        ),
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            control if (control as u32) < 0x20 => {
                quoted.push_str(&format!("\\u{:04x}", control as u32))
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            parse_query("msg=hello+there%21&empty=&flag"),
            vec![
                ("msg".to_string(), "hello there!".to_string()),
                ("empty".to_string(), String::new()),
                ("flag".to_string(), String::new()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn bad_flags_are_refused() {
        let parse = |args: &[&str]| Options::parse(args.iter().map(|s| s.to_string()));
        assert!(parse(&["--http-port"]).is_err());
        assert!(parse(&["--http-port", "eighty"]).is_err());
        assert!(parse(&["--verbose"]).is_err());
        let options = parse(&["--http-port", "9376", "--udp-port", "0"]).unwrap();
        assert_eq!((options.http_port, options.udp_port), (9376, 0));
    }
}
