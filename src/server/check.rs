//! The `envoy.service.auth.v3.Authorization/Check` gRPC method.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::translate;
use super::App;
use crate::decision::Decision;
use crate::pb::auth::authorization_server::Authorization;
use crate::pb::auth::{CheckRequest, CheckResponse};

pub struct CheckService {
    app: Arc<App>,
}

impl CheckService {
    pub fn new(app: Arc<App>) -> CheckService {
        CheckService { app }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let raw = translate::raw_headers(&request);
        let metadata = translate::metadata(&request);
        let view = translate::request_view(&request, raw.as_deref(), metadata.as_ref());
        let decision = self.app.authorizer.decide(&view).await;
        log_decision(&decision, &view);
        Ok(Response::new(translate::check_response(
            &decision,
            &view,
            &self.app.answers,
        )))
    }
}

/// One line per decision: allows at debug, denials at info, errors at warn. The path is logged without
/// its query string (which may carry credentials); tokens never are.
fn log_decision(decision: &Decision, view: &crate::request::RequestView<'_>) {
    match decision {
        Decision::Allow(identity) => tracing::debug!(
            authz.decision = "allow",
            provider.name = %identity.provider,
            principal = identity.subject.as_deref().unwrap_or(""),
            http.method = view.method,
            http.path = view.path,
            request.id = view.request_id,
        ),
        Decision::Deny(denial) => tracing::info!(
            authz.decision = "deny",
            authz.reason = denial.reason.as_str(),
            provider.name = denial.provider.as_deref().unwrap_or(""),
            http.method = view.method,
            http.path = view.path,
            request.id = view.request_id,
        ),
        Decision::Error(why) => tracing::warn!(
            authz.decision = "error",
            authz.reason = why.as_str(),
            http.method = view.method,
            http.path = view.path,
            request.id = view.request_id,
        ),
    }
}
