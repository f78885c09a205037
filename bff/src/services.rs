//! The services' query APIs, called over HTTP with the caller's identity in headers. A service's
//! 404 stays a 404; anything else unexpected is a 502 for the caller and a warning in the log.

use crate::auth::Caller;
use axum::http::{StatusCode, header};
use messaging::ServiceToken;
use messaging::http::Problem;
use serde_json::Value;

/// One of the five processes with a query API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Campaigns,
    Tracking,
    Commissions,
    Payments,
    Sagas,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Campaigns,
        Service::Tracking,
        Service::Commissions,
        Service::Payments,
        Service::Sagas,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Campaigns => "campaigns",
            Service::Tracking => "tracking",
            Service::Commissions => "commissions",
            Service::Payments => "payments",
            Service::Sagas => "sagas",
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Where each service's query API answers.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    pub campaigns: String,
    pub tracking: String,
    pub commissions: String,
    pub payments: String,
    pub sagas: String,
}

impl ServiceUrls {
    fn of(&self, service: Service) -> &str {
        match service {
            Service::Campaigns => &self.campaigns,
            Service::Tracking => &self.tracking,
            Service::Commissions => &self.commissions,
            Service::Payments => &self.payments,
            Service::Sagas => &self.sagas,
        }
    }
}

/// The HTTP client for the services, presenting the service token.
#[derive(Debug, Clone)]
pub struct Services {
    http: reqwest::Client,
    urls: ServiceUrls,
}

/// Header names carrying the verified caller to the services: for their logs, and as the actor of
/// an operator action.
const ACTOR: &str = "x-pulsaga-actor";
const TENANT: &str = "x-pulsaga-tenant";

impl Services {
    pub fn new(urls: ServiceUrls, token: ServiceToken) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .default_headers(token.headers())
            .build()
            .expect("a client without TLS settings builds");
        Services { http, urls }
    }

    /// GETs `path` (with its query) from `service`: the JSON of a 2xx, `None` for a 404.
    pub async fn get(
        &self,
        service: Service,
        path: &str,
        caller: &Caller,
    ) -> Result<Option<Value>, Problem> {
        let request = self.http.get(format!("{}{path}", self.urls.of(service)));
        self.send(service, request, caller).await
    }

    /// Sends `body` to `path` of `service` with `method` (POST or PUT); the caller travels in
    /// headers.
    pub async fn write(
        &self,
        method: reqwest::Method,
        service: Service,
        path: &str,
        body: &Value,
        caller: &Caller,
    ) -> Result<Option<Value>, Problem> {
        let url = format!("{}{path}", self.urls.of(service));
        let request = self.http.request(method, url).json(body);
        self.send(service, request, caller).await
    }

    async fn send(
        &self,
        service: Service,
        request: reqwest::RequestBuilder,
        caller: &Caller,
    ) -> Result<Option<Value>, Problem> {
        let what = service.name();
        let response = request
            .header(ACTOR, &caller.subject)
            .header(TENANT, caller.tenant.as_deref().unwrap_or(""))
            .send()
            .await
            .map_err(|e| Problem::upstream(what, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            s if s.is_success() => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            // The service's own word on bad input (a filter, a time) is the caller's answer.
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
                Err(Problem::new(
                    status,
                    body["detail"].as_str().unwrap_or("refused").to_owned(),
                ))
            }
            // The service sheds load: so does the API, with the service's word on when to return.
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{what} is busy; try again"),
            )
            .retry_after(retry_after.unwrap_or(1))),
            other => Err(Problem::upstream(what, format!("answered {other}: {body}"))),
        }
    }

    /// What `service`'s `/readyz` says (its restarts, its projections' lag), if it is ready: it
    /// reaches its database.
    pub async fn ready(&self, service: Service) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/readyz", self.urls.of(service)))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())?;
        response.json().await.ok()
    }
}
