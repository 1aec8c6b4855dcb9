//! The no-op ext_authz server: the same tonic stack and transport settings as `portcullis serve`
//! (HTTP/2 keepalive, `TCP_NODELAY` on accepted sockets), answering OK to every Check without looking at
//! it. It runs in its own process (`portcullis bench --serve-noop ADDR`) so that its CPU time is counted
//! apart from the load generator's, like portcullis's.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use portcullis_proto::auth::authorization_server::{Authorization, AuthorizationServer};
use portcullis_proto::auth::{check_response, CheckRequest, CheckResponse, OkHttpResponse};
use portcullis_proto::rpc;

#[derive(Default)]
pub struct Noop;

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(check_response::HttpResponse::OkResponse(
                OkHttpResponse::default(),
            )),
            ..Default::default()
        }))
    }
}

/// Serves until the process is stopped; prints `listening on ADDR` once bound.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "bench no-op ext_authz server listening on {}",
        listener.local_addr()?
    );
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(AuthorizationServer::new(Noop))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
