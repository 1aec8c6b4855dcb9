//! `ReqwestUpstream` against a one-connection HTTP server on 127.0.0.1:0: calls made on a background
//! runtime (the Envoy module's way), the body limit, redirects, the `User-Agent`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::future::BoxFuture;
use portcullis_core::config::{MemoryFiles, Sources, TlsSettings};
use portcullis_core::providers::http::{
    HttpRequest, HttpResponse, Method, Purpose, Upstream, UpstreamError,
};
use portcullis_io::ReqwestUpstream;

/// Answers one connection with `response`; the thread returns the request's head.
fn serve_once(response: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        stream.write_all(response.as_bytes()).unwrap();
        String::from_utf8(head).unwrap()
    });
    (addr, served)
}

fn get(
    upstream: &ReqwestUpstream,
    addr: SocketAddr,
    max_body: usize,
) -> BoxFuture<'static, Result<HttpResponse, UpstreamError>> {
    let sources = Sources::new(Arc::new(MemoryFiles::default()));
    let client = upstream
        .client(&TlsSettings::default(), Purpose::Calls, &sources)
        .unwrap();
    let url = reqwest::Url::parse(&format!("http://{addr}/x")).unwrap();
    client.send(HttpRequest::new(Method::Get, url, max_body))
}

/// Polls `future` to its end on this thread, which has no tokio context.
fn block_on<T>(future: BoxFuture<'static, T>) -> T {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = future;
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::park();
    }
}

fn background() -> Result<&'static tokio::runtime::Handle, &'static str> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    Ok(RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
        .handle())
}

#[test]
fn calls_on_a_background_runtime_complete_when_polled_outside_tokio() {
    let (addr, served) =
        serve_once("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
    let upstream = ReqwestUpstream::with_user_agent("portcullis-test/1")
        .unwrap()
        .calls_on(background);
    // A plain thread: without `calls_on` reqwest would find no tokio reactor here.
    let response = std::thread::spawn(move || block_on(get(&upstream, addr, 1024)))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello");
    let head = served.join().unwrap().to_ascii_lowercase();
    assert!(head.contains("user-agent: portcullis-test/1\r\n"), "{head}");
}

#[test]
fn a_call_fails_as_unavailable_when_its_runtime_cannot_start() {
    let upstream = ReqwestUpstream::new().calls_on(|| Err("no background thread"));
    let addr = "127.0.0.1:9".parse().unwrap();
    let result = block_on(get(&upstream, addr, 1024));
    assert!(
        matches!(&result, Err(UpstreamError::RequestFailed(e)) if e.to_string() == "no background thread"),
        "{:?}",
        result.map(|r| r.status)
    );
}

#[tokio::test]
async fn a_body_longer_than_max_body_is_refused() {
    let (addr, served) = serve_once(
        "HTTP/1.1 200 OK\r\ncontent-length: 64\r\nconnection: close\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123",
    );
    let result = get(&ReqwestUpstream::new(), addr, 10).await;
    assert!(
        matches!(result, Err(UpstreamError::TooLarge(10))),
        "{:?}",
        result.map(|r| r.status)
    );
    let head = served.join().unwrap().to_ascii_lowercase();
    let agent = concat!("user-agent: portcullis/", env!("CARGO_PKG_VERSION"), "\r\n");
    assert!(head.contains(agent), "{head}");
}

#[tokio::test]
async fn a_call_follows_no_redirect() {
    // Followed, the redirect would go to a port nobody listens on and fail.
    let (addr, served) = serve_once(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let response = get(&ReqwestUpstream::new(), addr, 1024).await.unwrap();
    assert_eq!(response.status, 307);
    assert!(response.body.is_empty());
    served.join().unwrap();
}
