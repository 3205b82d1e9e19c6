//! Reads a tunnelled client's TLS ClientHello before splicing, so a CONNECT to an allowed
//! host cannot carry a handshake for another site on the same edge (domain fronting).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The most the proxy buffers while waiting for a complete ClientHello.
pub(super) const MAX_HELLO: usize = 16 * 1024;
/// A client must send its ClientHello within this.
pub(super) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ECH: u16 = 0xfe0d;

/// Why a tunnel was closed before anything reached the upstream; the tag goes in the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HelloRefusal {
    NotTls,
    NoSni,
    Ech,
    SniMismatch(String),
    /// Truncated, malformed, too large or too slow.
    Bad(String),
}

impl HelloRefusal {
    pub(super) fn tag(&self) -> &'static str {
        match self {
            HelloRefusal::NotTls => "not_tls",
            HelloRefusal::NoSni => "no_sni",
            HelloRefusal::Ech => "ech",
            HelloRefusal::SniMismatch(_) => "sni_mismatch",
            HelloRefusal::Bad(_) => "bad_client_hello",
        }
    }

    pub(super) fn message(&self, host: &str) -> String {
        match self {
            HelloRefusal::NotTls => format!("the tunnel to {host} did not start with TLS"),
            HelloRefusal::NoSni => format!("the TLS ClientHello for {host} names no server (SNI)"),
            HelloRefusal::Ech => {
                format!("the TLS ClientHello for {host} uses encrypted client hello")
            }
            HelloRefusal::SniMismatch(sni) => {
                format!("the TLS ClientHello names {sni:?}, not the CONNECT host {host}")
            }
            HelloRefusal::Bad(why) => format!("the TLS ClientHello for {host}: {why}"),
        }
    }
}

/// What the ClientHello says that matters here.
#[derive(Debug, PartialEq, Eq)]
struct Hello {
    sni: Option<String>,
    ech: bool,
}

enum Parsed {
    Incomplete,
    Done(Hello),
}

/// Reads the client's first TLS records until the ClientHello is complete and checks its SNI
/// against `host` (a name: equal ignoring ASCII case and a trailing dot; an IP address: no
/// SNI). Returns the bytes read, to be forwarded as they are.
pub(super) async fn check_client_hello<R: AsyncRead + Unpin>(
    client: &mut R,
    host: &str,
    host_is_ip: bool,
) -> Result<Vec<u8>, HelloRefusal> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        loop {
            match parse(&buf)? {
                Parsed::Done(h) => return Ok(h),
                Parsed::Incomplete => {}
            }
            if buf.len() >= MAX_HELLO {
                return Err(HelloRefusal::Bad(format!("longer than {MAX_HELLO} bytes")));
            }
            let mut chunk = [0u8; 4096];
            let want = chunk.len().min(MAX_HELLO - buf.len());
            let n = client
                .read(&mut chunk[..want])
                .await
                .map_err(|e| HelloRefusal::Bad(format!("reading it failed: {e}")))?;
            if n == 0 {
                return Err(if buf.is_empty() {
                    HelloRefusal::NotTls
                } else {
                    HelloRefusal::Bad("the client closed before it was complete".into())
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read)
        .await
        .map_err(|_| HelloRefusal::Bad(format!("not sent within {HELLO_TIMEOUT:?}")))??;
    if hello.ech {
        return Err(HelloRefusal::Ech);
    }
    let want = host.trim_end_matches('.');
    match hello.sni {
        None if host_is_ip => Ok(buf),
        None => Err(HelloRefusal::NoSni),
        Some(sni) if !host_is_ip && sni.trim_end_matches('.').eq_ignore_ascii_case(want) => Ok(buf),
        Some(sni) => Err(HelloRefusal::SniMismatch(sni)),
    }
}

/// Parses the handshake carried by the TLS records at the start of `buf`.
fn parse(buf: &[u8]) -> Result<Parsed, HelloRefusal> {
    let bad = |m: &str| HelloRefusal::Bad(m.to_owned());
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.is_empty() {
            return Ok(Parsed::Incomplete);
        }
        if rest[0] != HANDSHAKE {
            return Err(if handshake.is_empty() && buf.len() == rest.len() {
                HelloRefusal::NotTls
            } else {
                bad("a non-handshake record before the ClientHello was complete")
            });
        }
        if rest.len() < 5 {
            return Ok(Parsed::Incomplete);
        }
        if rest[1] != 0x03 {
            return Err(HelloRefusal::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Err(bad("an empty handshake record"));
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return Ok(Parsed::Incomplete);
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != CLIENT_HELLO {
                return Err(bad("the first handshake message is not a ClientHello"));
            }
            let body_len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if handshake.len() >= 4 + body_len {
                return parse_hello(&handshake[4..4 + body_len])
                    .map(Parsed::Done)
                    .ok_or_else(|| bad("malformed"));
            }
        }
    }
}

/// A cursor over a ClientHello body; `None` on truncation.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

fn parse_hello(body: &[u8]) -> Option<Hello> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    let n = r.u8()?;
    r.take(n)?; // session id
    let n = r.u16()?;
    r.take(n)?; // cipher suites
    let n = r.u8()?;
    r.take(n)?; // compression methods
    let mut hello = Hello {
        sni: None,
        ech: false,
    };
    if r.0.is_empty() {
        return Some(hello);
    }
    let n = r.u16()?;
    let mut exts = Reader(r.take(n)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let n = exts.u16()?;
        let data = exts.take(n)?;
        match kind as u16 {
            EXT_ECH => hello.ech = true,
            EXT_SERVER_NAME => {
                if hello.sni.is_some() {
                    return None;
                }
                let mut list = Reader(data);
                let n = list.u16()?;
                let mut names = Reader(list.take(n)?);
                while !names.0.is_empty() {
                    let name_type = names.u8()?;
                    let n = names.u16()?;
                    let name = names.take(n)?;
                    if name_type == 0 {
                        // Two host names is not a valid SNI; refuse rather than pick one.
                        if hello.sni.is_some() {
                            return None;
                        }
                        hello.sni = Some(std::str::from_utf8(name).ok()?.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with `exts` (type, data), split in records of `record` bytes.
    fn hello(exts: &[(u16, Vec<u8>)], record: usize) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        let mut e = Vec::new();
        for (k, d) in exts {
            e.extend(k.to_be_bytes());
            e.extend((d.len() as u16).to_be_bytes());
            e.extend(d);
        }
        body.extend((e.len() as u16).to_be_bytes());
        body.extend(e);
        let mut hs = vec![CLIENT_HELLO, 0];
        hs.extend((body.len() as u16).to_be_bytes());
        hs.extend(body);
        let mut out = Vec::new();
        for chunk in hs.chunks(record) {
            out.extend([HANDSHAKE, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name.as_bytes());
        let mut d = (entry.len() as u16).to_be_bytes().to_vec();
        d.extend(entry);
        (EXT_SERVER_NAME, d)
    }

    async fn check(bytes: Vec<u8>, host: &str) -> Result<Vec<u8>, HelloRefusal> {
        check_client_hello(&mut bytes.as_slice(), host, false).await
    }

    #[tokio::test]
    async fn the_sni_must_name_the_connect_host() {
        let ok = hello(&[sni("API.example.com.")], 1000);
        assert_eq!(check(ok.clone(), "api.example.com").await, Ok(ok));
        // Split over several records, still complete.
        assert!(
            check(hello(&[sni("api.example.com")], 7), "api.example.com")
                .await
                .is_ok()
        );
        assert_eq!(
            check(hello(&[sni("attacker.example")], 1000), "api.example.com").await,
            Err(HelloRefusal::SniMismatch("attacker.example".into()))
        );
        assert_eq!(
            check(hello(&[], 1000), "api.example.com").await,
            Err(HelloRefusal::NoSni)
        );
        assert_eq!(
            check(
                hello(&[sni("api.example.com"), (EXT_ECH, vec![0])], 1000),
                "api.example.com"
            )
            .await,
            Err(HelloRefusal::Ech)
        );
        assert_eq!(
            check(b"GET / HTTP/1.1\r\n\r\n".to_vec(), "api.example.com").await,
            Err(HelloRefusal::NotTls)
        );
        let mut cut = hello(&[sni("api.example.com")], 1000);
        cut.truncate(20);
        assert!(matches!(
            check(cut, "api.example.com").await,
            Err(HelloRefusal::Bad(_))
        ));
    }
}
