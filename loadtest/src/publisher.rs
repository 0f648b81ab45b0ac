//! The fan-out publishers' client: `textMessageSend` over one keep-alive HTTP/1.1 connection.
//!
//! Setup uses reqwest; the publishing loop does not. Measured with `loadtest fanout
//! --subscribers 10 --channels 10 --messages 7500 --rate 1500`, reqwest cost the generator about
//! 130 µs of CPU per message (building the request, handing it to its connection task, JSON in
//! and out), on the same two cores as the server, and its send path sits inside the measured
//! latency. This client writes each request in one syscall from a template and checks the
//! answer with a substring search, as the subscribers do with frames.

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MUTATION: &str = "mutation($c: String!, $t: String!) { textMessageSend(channelIdentifier: $c, textMessage: $t) { statusCode } }";
const MAX_RESPONSE_BYTES: usize = 64 << 10;

pub struct Publisher {
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
    path: String,
    authorization: String,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl Publisher {
    /// A publisher to the GraphQL endpoint of the server at `base_url` (plain `http://`), sending
    /// as the holder of `token`. Connects on first use.
    pub fn new(base_url: &str, token: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base_url)?;
        if url.scheme() != "http" {
            bail!("loadtest fanout publishes over plain http://, not {base_url}");
        }
        let host = url.host_str().context("URL without host")?;
        let port = url.port_or_known_default().context("URL without port")?;
        Ok(Self {
            authority: format!("{host}:{port}"),
            path: format!("{}/graphql/", url.path().trim_end_matches('/')),
            authorization: format!("JWT {token}"),
            stream: None,
            request: Vec::with_capacity(512),
            response: Vec::with_capacity(1024),
        })
    }

    /// Sends `text` to `channel` and waits for the server's answer: an error unless the
    /// message was accepted (`statusCode` 200).
    pub async fn send(&mut self, channel: &str, text: &str) -> anyhow::Result<()> {
        let body =
            serde_json::json!({ "query": MUTATION, "variables": { "c": channel, "t": text } })
                .to_string();
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.path,
                self.authority,
                self.authorization,
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body.as_bytes());

        self.reconnect_if_closed().await?;
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(&self.request).await?;
        let (status, keep_alive, body) = read_response(stream, &mut self.response).await?;
        let accepted = status == 200 && memchr::memmem::find(body, b"\"statusCode\":200").is_some();
        if !accepted {
            bail!(
                "textMessageSend was refused (HTTP {status}): {}",
                String::from_utf8_lossy(body)
            );
        }
        if !keep_alive {
            self.stream = None;
        }
        Ok(())
    }

    /// Connects if there is no connection yet, or the server closed it while it was idle (a
    /// keep-alive connection may be closed between requests; a request in flight is never
    /// retried).
    async fn reconnect_if_closed(&mut self) -> anyhow::Result<()> {
        let closed = match &self.stream {
            None => true,
            Some(stream) => !matches!(
                stream.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            ),
        };
        if closed {
            let stream = TcpStream::connect(&self.authority)
                .await
                .with_context(|| format!("connecting to {}", self.authority))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        Ok(())
    }
}

/// Reads one response with a `Content-Length` body into `buf`: (status, keep-alive, body).
async fn read_response<'b>(
    stream: &mut TcpStream,
    buf: &'b mut Vec<u8>,
) -> anyhow::Result<(u16, bool, &'b [u8])> {
    buf.clear();
    let head_end = loop {
        if let Some(at) = memchr::memmem::find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        fill(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .context("no HTTP status line")?;
    let (mut length, mut keep_alive) = (None, true);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>()?);
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("the publisher reads Content-Length responses, not Transfer-Encoding: {value}");
        }
    }
    let length = length.context("response without Content-Length")?;
    while buf.len() < head_end + length {
        fill(stream, buf).await?;
    }
    Ok((status, keep_alive, &buf[head_end..head_end + length]))
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    if buf.len() > MAX_RESPONSE_BYTES {
        bail!("response larger than {MAX_RESPONSE_BYTES} bytes");
    }
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        bail!("the server closed the connection before answering textMessageSend");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const ACCEPTED: &str = r#"{"data":{"textMessageSend":{"statusCode":200}}}"#;

    /// Reads one request head and body from `stream`, returning the body.
    async fn read_request(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        loop {
            if let Some(at) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
                let length: usize = head
                    .split("content-length: ")
                    .nth(1)
                    .and_then(|v| v.split("\r\n").next())
                    .unwrap()
                    .parse()
                    .unwrap();
                while buf.len() < at + 4 + length {
                    stream.read_buf(&mut buf).await.unwrap();
                }
                return String::from_utf8_lossy(&buf[at + 4..]).into_owned();
            }
            assert!(stream.read_buf(&mut buf).await.unwrap() > 0);
        }
    }

    async fn answer(stream: &mut TcpStream, body: &str) {
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_between_messages_is_reopened() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut publisher = Publisher::new(&url, "t0k3n").unwrap();
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let mut bodies = Vec::new();
            let mut closed_tx = Some(closed_tx);
            for _ in 0..2 {
                // Each connection serves one request, then the server closes it.
                let (mut stream, _) = listener.accept().await.unwrap();
                bodies.push(read_request(&mut stream).await);
                answer(&mut stream, ACCEPTED).await;
                drop(stream);
                if let Some(tx) = closed_tx.take() {
                    tx.send(()).unwrap();
                }
            }
            bodies
        });
        publisher.send("town", "lt:0:1").await.unwrap();
        closed.await.unwrap();
        publisher.send("town", "lt:1:2").await.unwrap();
        let bodies = server.await.unwrap();
        assert!(bodies[0].contains(r#""t":"lt:0:1""#), "{}", bodies[0]);
        assert!(bodies[1].contains(r#""c":"town""#), "{}", bodies[1]);
    }

    #[tokio::test]
    async fn a_refused_message_is_an_error_carrying_the_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
            answer(
                &mut stream,
                r#"{"data":{"textMessageSend":{"statusCode":403,"message":"Not a member."}}}"#,
            )
            .await;
        });
        let error = Publisher::new(&url, "t0k3n")
            .unwrap()
            .send("town", "hello")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("Not a member."), "{error}");
    }

    #[test]
    fn only_plain_http_is_spoken() {
        let error = Publisher::new("https://example.test", "t").err().unwrap();
        assert!(error.to_string().contains("plain http://"), "{error}");
    }
}
