//! git's smart HTTP protocol for libgit2's fetches, carried by reqwest (rustls).
//!
//! libgit2 built with its own `https` support links OpenSSL and initialises it on every start
//! of `wms`, fetch or not: loading libssl and libcrypto and building an `SSL_CTX` took a tenth
//! of a `detect-changes` run. Only a shallow clone's fetch ever needs the network, so
//! libgit2 is built without TLS and this subtransport serves `http://` and `https://` remotes
//! instead: `GET …/info/refs?service=git-upload-pack` for the advertisement, then one
//! `POST …/git-upload-pack` per negotiation round (stateless RPC), as git's own smart HTTP
//! client does. Fetch only; a push is refused with a message.
//!
//! Authentication: `http.<url>.extraheader` values (what `actions/checkout` stores) and
//! credentials in the URL's user-info become request headers.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};

use crate::untrusted::redact::{self, Userinfo};
use crate::untrusted::text::for_log;

/// The user agent git hosts expect from smart HTTP clients ("git/" first).
const USER_AGENT: &str = concat!("git/2.0 (wms/", env!("CARGO_PKG_VERSION"), ")");

/// Headers for the fetch about to run (`Name: value`), set by [`set_headers`]. libgit2 hands a
/// custom subtransport only the URL, so the repository's settings travel this way.
static HEADERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes libgit2 use this subtransport for `http://` and `https://` remotes (once per process).
pub fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for scheme in ["http", "https"] {
                // SAFETY: called once (OnceLock), before the fetch that uses it, from the only
                // thread that calls libgit2.
                unsafe {
                    git2::transport::register(scheme, |remote| {
                        Transport::smart(remote, true, SmartHttp::default())
                    })
                }
                .map_err(|e| format!("cannot register the {scheme} transport: {}", e.message()))?;
            }
            Ok(())
        })
        .clone()
}

/// Extra request headers (`Name: value`) for the fetches that follow.
pub fn set_headers(headers: Vec<String>) {
    if let Ok(mut slot) = HEADERS.lock() {
        *slot = headers;
    }
}

#[derive(Default)]
struct SmartHttp {
    /// Where `info/refs` ended up after redirects; the POSTs go there too, as git's do.
    base: Arc<Mutex<Option<String>>>,
}

impl SmartSubtransport for SmartHttp {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let (path, post) = match action {
            Service::UploadPackLs => ("info/refs?service=git-upload-pack", false),
            Service::UploadPack => ("git-upload-pack", true),
            Service::ReceivePackLs | Service::ReceivePack => {
                return Err(git2::Error::from_str(
                    "wms fetches only; pushing over HTTP is not supported",
                ));
            }
        };
        // libgit2 hands every action the remote's URL as configured, userinfo included: the
        // credentials are taken out here and travel as a header, also to the POSTs that go to
        // the base `info/refs` was redirected to (as long as that is the same origin).
        let (plain, userinfo) = redact::take_userinfo(url);
        let credentials = userinfo.and_then(|u| {
            let origin = reqwest::Url::parse(&plain)
                .ok()?
                .origin()
                .ascii_serialization();
            Some((u, origin))
        });
        let base = self
            .base
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .unwrap_or_else(|| plain.trim_end_matches('/').to_string());
        let headers = HEADERS.lock().map(|h| h.clone()).unwrap_or_default();
        Ok(Box::new(HttpStream {
            url: format!("{base}/{path}"),
            post,
            credentials,
            headers,
            body: Vec::new(),
            response: None,
            redirected_base: (!post).then(|| self.base.clone()),
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// One request: what libgit2 writes is the POST body, sent on its first read.
struct HttpStream {
    url: String,
    post: bool,
    /// The remote URL's userinfo and the origin it may be sent to.
    credentials: Option<(Userinfo, String)>,
    headers: Vec<String>,
    body: Vec<u8>,
    response: Option<reqwest::blocking::Response>,
    /// For `info/refs`: where to record the base URL after redirects.
    redirected_base: Option<Arc<Mutex<Option<String>>>>,
}

fn client() -> Result<&'static reqwest::blocking::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::blocking::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::blocking::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(Duration::from_secs(30))
                // A pack can take long; only a stalled connection is an error.
                .timeout(None)
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl HttpStream {
    fn send(&mut self) -> io::Result<reqwest::blocking::Response> {
        let fail = |message: String| io::Error::other(message);
        let client = client().map_err(fail)?;
        // Never send credentials inside the request line or log them.
        let (plain, _) = redact::take_userinfo(&self.url);
        let url = reqwest::Url::parse(&plain)
            .map_err(|e| fail(format!("bad remote URL {}: {e}", for_log(&plain))))?;
        let shown = url.to_string();
        let credentials = self
            .credentials
            .as_ref()
            .filter(|(_, origin)| *origin == url.origin().ascii_serialization())
            .map(|(userinfo, _)| userinfo.clone());
        let mut request = if self.post {
            client
                .post(url)
                .header("Content-Type", "application/x-git-upload-pack-request")
                .header("Accept", "application/x-git-upload-pack-result")
                .body(std::mem::take(&mut self.body))
        } else {
            client.get(url)
        };
        if let Some(Userinfo { user, password }) = credentials {
            request = request.basic_auth(user, password);
        }
        for header in &self.headers {
            if let Some((name, value)) = header.split_once(':') {
                request = request.header(name.trim(), value.trim());
            }
        }
        let response = request
            .send()
            .map_err(|e| fail(format!("{shown}: {}", crate::mlflow::error::chain(&e))))?;
        let status = response.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => {
                    "; hint: the remote wants credentials (actions/checkout with persist-credentials keeps them in http.<url>.extraheader)"
                }
                _ => "",
            };
            return Err(fail(format!("{shown} answered {status}{hint}")));
        }
        let expected = if self.post {
            "application/x-git-upload-pack-result"
        } else {
            "application/x-git-upload-pack-advertisement"
        };
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type != expected {
            return Err(fail(format!(
                "{shown} answered with content type {content_type:?}, not git's smart HTTP protocol ({expected}); dumb HTTP servers are not supported"
            )));
        }
        if let Some(slot) = &self.redirected_base {
            let final_url = response.url().as_str();
            if let Some(base) = final_url.strip_suffix("/info/refs?service=git-upload-pack")
                && let Ok(mut slot) = slot.lock()
            {
                *slot = Some(base.to_string());
            }
        }
        Ok(response)
    }
}

impl Read for HttpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            self.response = Some(self.send()?);
        }
        self.response.as_mut().map_or(Ok(0), |r| r.read(buf))
    }
}

impl Write for HttpStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.response.is_some() {
            return Err(io::Error::other(
                "git protocol error: a request body written after its response",
            ));
        }
        self.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
