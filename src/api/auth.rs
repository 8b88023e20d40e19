//! Who is calling: `Authorization: Bearer TOKEN` against the tokens of
//! `[[api.tokens]]`, compared in constant time (digests of equal length,
//! every token compared), never logged nor echoed. A token in the query
//! string is refused outright (it would land in proxy and access logs).
//! Failed attempts are counted per client address: past
//! [`MAX_FAILURES`] a minute the address gets 429 until the minute is
//! over, whatever it sends.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::SharedApi;
use crate::config::api::{Role, Token};

/// Failed attempts allowed per client address per [`WINDOW`].
pub const MAX_FAILURES: usize = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; the oldest are forgotten past it, so a
/// flood of addresses cannot grow memory.
const MAX_ADDRESSES: usize = 10_000;

/// The client's address, as the listener saw it (plain TCP or TLS).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for ClientAddr
{
    fn connect_info(s: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*s.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, super::tls::TlsListener>>
    for ClientAddr
{
    fn connect_info(s: axum::serve::IncomingStream<'_, super::tls::TlsListener>) -> Self {
        ClientAddr(*s.remote_addr())
    }
}

/// The caller of a request that passed [`require`]: its token's label
/// and role.
#[derive(Clone, Debug)]
pub struct Caller {
    pub label: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller's role is at least `role`.
    pub fn at_least(&self, role: Role, what: &str) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{what} needs the {} role; token {:?} is {}",
                role.as_str(),
                self.label,
                self.role.as_str()
            )))
        }
    }
}

struct Known {
    label: String,
    role: Role,
    digest: [u8; 32],
}

/// Only a digest of each token is kept.
fn known(tokens: Vec<Token>) -> Vec<Known> {
    tokens
        .into_iter()
        .map(|t| Known {
            digest: *blake3::hash(t.secret.as_bytes()).as_bytes(),
            label: t.label,
            role: t.role,
        })
        .collect()
}

/// The tokens and the failure counts.
pub struct Auth {
    tokens: RwLock<Vec<Known>>,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Auth {
    pub fn new(tokens: Vec<Token>) -> Auth {
        Auth {
            tokens: RwLock::new(known(tokens)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The tokens of a reloaded configuration, in place of the old ones (a
    /// token removed from the file stops working at once).
    pub fn replace(&self, tokens: Vec<Token>) {
        *self
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = known(tokens);
    }

    /// The caller whose token is `presented`. Every token is compared, each
    /// in constant time, so neither the time nor the order tells which
    /// token came close.
    pub fn identify(&self, presented: &str) -> Option<Caller> {
        let digest = blake3::hash(presented.as_bytes());
        let mut found = None;
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in tokens.iter() {
            let same =
                aws_lc_rs::constant_time::verify_slices_are_equal(digest.as_bytes(), &t.digest)
                    .is_ok();
            if same && found.is_none() {
                found = Some(Caller {
                    label: t.label.clone(),
                    role: t.role,
                });
            }
        }
        found
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `ip` has used up its failed attempts (seconds until the
    /// oldest one counted expires).
    fn blocked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let mut map = self.failures();
        let q = map.get_mut(&ip)?;
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.is_empty() {
            map.remove(&ip);
            return None;
        }
        (q.len() >= MAX_FAILURES).then(|| {
            let oldest = *q.front().expect("not empty");
            (WINDOW - now.duration_since(oldest)).as_secs().max(1)
        })
    }

    /// The 429 (with `Retry-After`) for an address that has used up its
    /// failed attempts; None lets it try.
    pub(super) fn refuse_if_blocked(&self, ip: IpAddr, now: Instant) -> Option<Response> {
        let wait = self.blocked(ip, now)?;
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed attempts from {ip}: try again in {wait} s"),
        )
        .into_response();
        r.headers_mut().insert(
            header::RETRY_AFTER,
            wait.to_string().parse().expect("digits"),
        );
        Some(r)
    }

    pub(super) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.failures();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if map.len() >= MAX_ADDRESSES {
                map.clear();
            }
        }
        let q = map.entry(ip).or_default();
        q.push_back(now);
        while q.len() > MAX_FAILURES {
            q.pop_front();
        }
    }
}

/// The query parameters that would carry a token.
const QUERY_TOKEN_NAMES: &[&str] = &["token", "access_token", "api_key", "apikey", "bearer"];

/// Refuse a request that puts a token in its query string (400), before
/// anything else looks at it: the token has been exposed to logs, and
/// accepting it would teach clients to do it.
pub async fn refuse_query_tokens(req: Request, next: Next) -> Response {
    if let Some(q) = req.uri().query() {
        let named = q.split('&').any(|kv| {
            let key = kv.split('=').next().unwrap_or("");
            let key = percent_decode(key).to_ascii_lowercase();
            QUERY_TOKEN_NAMES.contains(&key.as_str())
        });
        if named {
            return ApiError::bad_request(
                "a token in the query string is refused: send it as `Authorization: Bearer TOKEN`",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// A query key, percent-decoded (enough to see `%74oken` as `token`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Let the request through with its [`Caller`] if it carries a known
/// bearer token: 401 if it carries none or a wrong one, 429 if its
/// address failed too often.
pub async fn require(State(api): State<SharedApi>, mut req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    let now = Instant::now();
    if let Some(refused) = api.auth.refuse_if_blocked(ip, now) {
        return refused;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let caller = presented.and_then(|t| api.auth.identify(t));
    let Some(caller) = caller else {
        api.auth.failed(ip, now);
        let why = if presented.is_some() {
            "the bearer token is not valid"
        } else {
            "send a token: `Authorization: Bearer TOKEN`"
        };
        tracing::warn!(client = %ip, "API: refused a request: {why}");
        let mut r = ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"cairn\"".parse().expect("ascii"),
        );
        return r;
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![
            Token {
                label: "viewer".into(),
                role: Role::Viewer,
                secret: zeroize::Zeroizing::new("v".repeat(20)),
            },
            Token {
                label: "admin".into(),
                role: Role::Admin,
                secret: zeroize::Zeroizing::new("a".repeat(20)),
            },
        ])
    }

    #[test]
    fn tokens_are_recognised_exactly() {
        let a = auth();
        assert_eq!(a.identify(&"a".repeat(20)).unwrap().label, "admin");
        assert_eq!(a.identify(&"v".repeat(20)).unwrap().role, Role::Viewer);
        for wrong in ["", "a", &"a".repeat(19), &"a".repeat(21), &"A".repeat(20)] {
            assert!(a.identify(wrong).is_none(), "{wrong}");
        }
        let viewer = a.identify(&"v".repeat(20)).unwrap();
        assert!(viewer.at_least(Role::Viewer, "x").is_ok());
        let e = viewer.at_least(Role::Operator, "restoring").unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("operator"), "{}", e.message);
    }

    #[test]
    fn failures_are_limited_per_address_for_a_minute() {
        let a = auth();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            a.failed(ip, t0);
        }
        assert!(a.blocked(ip, t0).is_none());
        a.failed(ip, t0);
        assert!(a.blocked(ip, t0).is_some());
        assert!(a.blocked(other, t0).is_none());
        assert!(a.blocked(ip, t0 + WINDOW).is_none());
    }

    #[test]
    fn query_keys_are_decoded() {
        assert_eq!(percent_decode("%74oken"), "token");
        assert_eq!(percent_decode("access_token"), "access_token");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
