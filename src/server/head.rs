//! Limits of a request head (URI, headers, declared body size), refused in
//! our error shape before any handler runs, and hyper's own refusals
//! rewritten into that shape.
//!
//! hyper answers a head it cannot parse or hold (a URI over 64 KiB, more
//! headers than its table, a head over its buffer) with a bare 400, 414 or
//! 431 and an empty body. Its hard caps are set well above ours, so nearly
//! every oversized head reaches [`refusal`] and gets a JSON answer naming the
//! limit; what still trips hyper (beyond what `http` can represent) passes
//! through [`OwnRefusals`], which replaces that bare answer on the wire.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{Request, StatusCode, header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::Error;

/// Longest path and query accepted, in bytes.
pub(crate) const MAX_URI_BYTES: usize = 16 * 1024;
/// Most header fields accepted in one request.
pub(crate) const MAX_HEADERS: usize = 100;
/// Most bytes of header names and values accepted in one request.
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;

/// hyper's HTTP/1.1 read buffer, which bounds a whole head.
pub(super) const HARD_MAX_HEAD_BYTES: usize = 512 * 1024;
/// hyper's header table for HTTP/1.1.
pub(super) const HARD_MAX_HEADERS: usize = 1024;
/// The HTTP/2 header list size we advertise.
pub(super) const HARD_MAX_HEADER_LIST_BYTES: u32 = 512 * 1024;

/// Why a request is refused before routing, if it is.
pub(super) fn refusal<B>(request: &Request<B>, max_body_bytes: usize) -> Option<Error> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("", |target| target.as_str());
    if target.len() > MAX_URI_BYTES {
        return Some(Error::UriTooLong {
            limit: MAX_URI_BYTES,
        });
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Some(Error::HeadersTooLarge {
            max_headers: MAX_HEADERS,
            max_bytes: MAX_HEADER_BYTES,
        });
    }
    if !decodes(request.uri().path()) {
        return Some(Error::InvalidRequest(
            "the path is not valid percent-encoded UTF-8".to_owned(),
        ));
    }
    if !request.uri().query().is_none_or(decodes) {
        return Some(Error::InvalidRequest(
            "the query string is not valid percent-encoded UTF-8".to_owned(),
        ));
    }
    // Refused at once from the head: waiting for a body we would refuse
    // anyway only holds the connection.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body_bytes as u64) {
        return Some(Error::PayloadTooLarge {
            limit: max_body_bytes,
        });
    }
    None
}

/// Whether every `%` starts an escape of two hex digits and the decoded
/// bytes are UTF-8; `percent-encoding` alone would pass a stray `%` through.
fn decodes(text: &str) -> bool {
    let escapes_well_formed = text.match_indices('%').all(|(at, _)| {
        text.as_bytes()
            .get(at + 1..at + 3)
            .is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit))
    });
    escapes_well_formed
        && percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .is_ok()
}

/// The whole HTTP/1.1 answer for `error` on a connection that is then closed.
pub(super) fn closing_response(error: &Error) -> Vec<u8> {
    let body = serde_json::to_string(&error.body()).unwrap_or_default();
    format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        error.status(),
        body.len()
    )
    .into_bytes()
}

/// A connection whose bare 400, 414 and 431 answers from hyper are replaced
/// by ours. Every answer of ours carries a `content-type`, so a refusal
/// without one can only be hyper's; hyper closes the connection after it.
#[derive(Debug)]
pub(super) struct OwnRefusals<T> {
    io: T,
    /// Our answer and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<T> OwnRefusals<T> {
    pub(super) fn new(io: T) -> Self {
        Self {
            io,
            replacement: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> OwnRefusals<T> {
    /// Takes over a write of `first` (of `total` bytes) when it is the
    /// whole of one of hyper's refusals.
    fn intercept(&mut self, first: &[u8], total: usize) -> bool {
        if self.replacement.is_none() && first.len() == total {
            self.replacement = hypers_refusal(first).map(|error| (closing_response(&error), 0));
        }
        self.replacement.is_some()
    }

    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, written)) = &mut self.replacement {
            while *written < bytes.len() {
                match ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))? {
                    0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    n => *written += n,
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Our error for a head hyper wrote itself: a status line with no
/// `content-type` and nothing after the blank line.
fn hypers_refusal(written: &[u8]) -> Option<Error> {
    let head = written.strip_suffix(b"\r\n\r\n")?;
    if !head.starts_with(b"HTTP/1.") || head.windows(4).any(|window| window == b"\r\n\r\n") {
        return None;
    }
    let typed = head
        .split(|&byte| byte == b'\n')
        .any(|line| line.to_ascii_lowercase().starts_with(b"content-type:"));
    if typed {
        return None;
    }
    let status = head.get(9..12)?;
    match StatusCode::from_bytes(status).ok()? {
        StatusCode::URI_TOO_LONG => Some(Error::UriTooLong {
            limit: MAX_URI_BYTES,
        }),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Some(Error::HeadersTooLarge {
            max_headers: MAX_HEADERS,
            max_bytes: MAX_HEADER_BYTES,
        }),
        StatusCode::BAD_REQUEST => Some(Error::InvalidRequest(
            "the request is not valid HTTP/1.1".to_owned(),
        )),
        _ => None,
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for OwnRefusals<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for OwnRefusals<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.intercept(buf, buf.len()) {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        ready!(this.poll_replacement(cx))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total = bufs.iter().map(|buf| buf.len()).sum();
        let first = bufs
            .iter()
            .find(|buf| !buf.is_empty())
            .map_or(&[][..], |buf| &buf[..]);
        if !this.intercept(first, total) {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        ready!(this.poll_replacement(cx))?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_must_be_well_formed_utf8() {
        for good in ["/api/chat", "/a%20b", "prompt=caf%C3%A9&x=1", ""] {
            assert!(decodes(good), "{good}");
        }
        for bad in ["%ZZ", "prompt=%", "a%2", "/api/chat/%FF%FE/events"] {
            assert!(!decodes(bad), "{bad}");
        }
    }

    #[test]
    fn only_hypers_bare_refusals_are_replaced() {
        let bare = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            hypers_refusal(bare).map(|error| error.status()),
            Some(StatusCode::URI_TOO_LONG)
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\r\n";
        assert!(hypers_refusal(ours).is_none());
        let success = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert!(hypers_refusal(success).is_none());
    }
}
