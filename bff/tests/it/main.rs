//! The API's router alone, called through `oneshot`: authentication, problem+json for every
//! error, validation, backpressure. No service runs (their URLs refuse connections, or one
//! answers as a busy service would), so every answer here is the BFF's own.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bff::auth::{Key, Verifier};
use bff::services::ServiceUrls;
use messaging::testing::respond;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"a development secret of 32 bytes";
const ISSUER: &str = "pulsaga";
const AUDIENCE: &str = "pulsaga-api";

async fn router() -> axum::Router {
    router_with(NOWHERE, 1000).await
}

/// The discard port: nothing listens there.
const NOWHERE: &str = "http://127.0.0.1:9";

/// The API with every service at `services`, and `rate` requests per second per caller.
async fn router_with(services: &str, rate: u32) -> axum::Router {
    let settings = bff::Settings {
        services: ServiceUrls {
            campaigns: services.to_owned(),
            tracking: services.to_owned(),
            commissions: services.to_owned(),
            payments: services.to_owned(),
            sagas: services.to_owned(),
        },
        service_token: messaging::ServiceToken::random(),
        verifier: Verifier::new(
            &Key::Hs256 {
                secret: SECRET.to_vec(),
            },
            ISSUER,
            AUDIENCE,
            30,
        )
        .expect("verifier"),
        rate_per_second: std::num::NonZeroU32::new(rate).expect("rate"),
        max_in_flight: 512,
        restarts: 0,
    };
    bff::router(messaging::testing::client().await, settings)
}

/// A token signed with the test secret, for `role`, with `aud` as given.
fn token(role: &str, aud: Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let claims = json!({
        "sub": format!("{role}-1"), "role": role, "iss": ISSUER, "aud": aud, "exp": now + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("token")
}

fn admin() -> String {
    token("admin", json!(AUDIENCE))
}

struct Answer {
    status: StatusCode,
    content_type: String,
    retry_after: Option<u64>,
    body: Value,
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    json_body: Option<&str>,
) -> Answer {
    let body = json_body.map(|text| (text, "application/json"));
    call_with(router, (method, uri), token, body).await
}

/// [`call`] with a body of any content type.
async fn call_with(
    router: &axum::Router,
    (method, uri): (&str, &str),
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some((text, content_type)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(text.to_owned())
        }
        None => Body::empty(),
    };
    let (status, headers, bytes) = respond(router, request.body(body).expect("request")).await;
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Answer {
        status,
        content_type,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// What is wrong, the method, the URI, the token, the body, and the status it is answered.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    StatusCode,
);

const PARTNER: &str = r#"{"name": "Pat", "email": "pat@example.com", "payout_account": "NL00"}"#;

#[tokio::test]
async fn every_error_is_problem_json() {
    let router = router().await;
    let admin = admin();
    let nul_name = PARTNER.replace("Pat", "Pat\\u0000");
    let auditor = token("auditor", json!(AUDIENCE));
    let cases: [Case; 14] = [
        (
            "a malformed id in the path",
            "GET",
            "/v1/campaigns/not-a-uuid",
            Some(&admin),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "a malformed id in a nested path",
            "GET",
            "/v1/partners/42/commissions",
            Some(&admin),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "no such route",
            "GET",
            "/v1/nothing-here",
            Some(&admin),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "a method the route does not take",
            "DELETE",
            "/v1/partners",
            Some(&admin),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "no token",
            "POST",
            "/v1/partners",
            None,
            Some(PARTNER),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a token for another audience",
            "POST",
            "/v1/partners",
            Some(&token("admin", json!("someone-else"))),
            Some(PARTNER),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a role that may not",
            "GET",
            "/v1/sagas",
            Some(&token("partner", json!(AUDIENCE))),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "dead letters are the admin's",
            "POST",
            "/v1/dead-letters/4f6fc97e-795a-59ac-a8f1-2f3a28065100/redrive",
            Some(&auditor),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "dead letters of no such service",
            "GET",
            "/v1/dead-letters?service=billing",
            Some(&admin),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "an unknown dead-letter filter",
            "GET",
            "/v1/dead-letters?colour=red",
            Some(&admin),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "dead letters when no service answers",
            "GET",
            "/v1/dead-letters",
            Some(&admin),
            None,
            StatusCode::BAD_GATEWAY,
        ),
        (
            "not JSON",
            "POST",
            "/v1/partners",
            Some(&admin),
            Some("{"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "an unknown field",
            "POST",
            "/v1/partners",
            Some(&admin),
            Some(r#"{"name": "Pat", "email": "p@e.com", "payout_account": "NL", "x": 1}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a NUL in a name",
            "POST",
            "/v1/partners",
            Some(&admin),
            Some(&nul_name),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (what, method, uri, token, body, expected) in cases {
        let answer = call(&router, method, uri, token, body).await;
        assert_eq!(answer.status, expected, "{what}: {}", answer.body);
        assert_eq!(
            answer.content_type, "application/problem+json",
            "{what}: {}",
            answer.body
        );
        assert_eq!(answer.body["status"], expected.as_u16(), "{what}");
        assert!(answer.body["detail"].is_string(), "{what}: {}", answer.body);
    }
}

#[tokio::test]
async fn a_caller_over_its_rate_is_told_when_to_come_back() {
    // One request a second, in bursts of two.
    let router = router_with(NOWHERE, 1).await;
    let admin = admin();
    for _ in 0..2 {
        let answer = call(&router, "GET", "/v1/campaigns", Some(&admin), None).await;
        assert_ne!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    }
    let refused = call(&router, "GET", "/v1/campaigns", Some(&admin), None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.content_type, "application/problem+json");
    assert_eq!(refused.retry_after, Some(1));
}

#[tokio::test]
async fn a_busy_service_makes_the_api_shed_load_with_its_retry_after() {
    let busy = axum::Router::new().fallback(|| async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "7")],
            r#"{"status": 503, "detail": "the database is busy; try again"}"#,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, busy).await });
    let router = router_with(&url, 1000).await;

    for uri in ["/v1/campaigns", "/v1/sagas"] {
        let answer = call(&router, "GET", uri, Some(&admin()), None).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(answer.content_type, "application/problem+json");
        assert_eq!(answer.retry_after, Some(7), "{uri}");
    }
}

#[tokio::test]
async fn an_audience_array_holding_ours_is_accepted() {
    let router = router().await;
    let ours = token("partner", json!(["billing", AUDIENCE]));
    // Authenticated, then refused for the role: not a 401.
    let answer = call(&router, "GET", "/v1/sagas", Some(&ours), None).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    let not_ours = token("partner", json!(["billing", "reports"]));
    let answer = call(&router, "GET", "/v1/sagas", Some(&not_ours), None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
}

#[tokio::test]
async fn text_with_control_characters_is_refused_with_the_field_named() {
    let router = router().await;
    let admin = admin();
    for (field, value) in [
        ("name", "Pat\\u0000"),
        ("email", "pat\\u0007@example.com"),
        ("payout_account", "NL00\\u001b[2J"),
        ("name", "Pa\\u0085t"),
    ] {
        let mut body: Value = serde_json::from_str(PARTNER).expect("json");
        body[field] = serde_json::from_str(&format!("\"{value}\"")).expect("a JSON string");
        let answer = call(
            &router,
            "POST",
            "/v1/partners",
            Some(&admin),
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let detail = answer.body["detail"].as_str().expect("detail");
        assert!(
            detail.starts_with(field) && detail.contains("control characters"),
            "{detail}"
        );
    }
}

/// A request: its URI, token, JSON body and content type (`application/json` by default).
type Call<'a> = (String, Option<&'a str>, Option<String>, Option<&'a str>);

/// `path` with its parameters filled in: a fresh id for each id, or `bad_id` in its place.
fn concrete(path: &str, bad_id: Option<&str>) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        out.push_str(&rest[..open]);
        let value = match &rest[open + 1..close] {
            "service" => "campaigns".to_owned(),
            "action" => "retry".to_owned(),
            "stream_id" => format!("campaign-{}", uuid::Uuid::new_v4()),
            _ => bad_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
        };
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every operation of the OpenAPI document, called the ways a client gets wrong (no token, a
/// malformed id, a body that is not JSON, not `application/json`, not a valid request, too large)
/// and the right way against services that are down: every status it answers is one its
/// operation documents, and every error is problem+json.
#[tokio::test]
async fn every_status_a_route_answers_is_in_its_openapi_document() {
    let router = router().await;
    let admin = admin();
    let document = serde_json::to_value(bff::openapi()).expect("the document as JSON");
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(bff::BODY_LIMIT));
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let documented: Vec<&String> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .collect();
            let method = method.to_uppercase();
            let has_id = path.contains("{id}") || path.contains("{correlation_id}");
            let mut calls: Vec<Call> = vec![
                (concrete(path, None), None, None, None),
                (concrete(path, None), Some(admin.as_str()), None, None),
            ];
            if has_id {
                calls.push((concrete(path, Some("not-an-id")), Some(&admin), None, None));
            }
            if operation["requestBody"].is_object() {
                let uri = concrete(path, None);
                calls.push((uri.clone(), Some(&admin), Some("{".into()), None));
                calls.push((uri.clone(), Some(&admin), Some(r#"{"x": 1}"#.into()), None));
                calls.push((uri.clone(), Some(&admin), Some(huge.clone()), None));
                calls.push((uri, Some(&admin), Some(PARTNER.into()), Some("text/plain")));
            }
            for (uri, token, body, content_type) in calls {
                let content_type = content_type.unwrap_or("application/json");
                let body = body.as_deref().map(|text| (text, content_type));
                let answer = call_with(&router, (&method, &uri), token, body).await;
                let status = answer.status;
                assert!(
                    documented.contains(&&status.as_str().to_owned()),
                    "{method} {uri} answered {status}, which {method} {path} does not document \
                     ({documented:?})"
                );
                if status.is_client_error() || status.is_server_error() {
                    assert_eq!(
                        answer.content_type, "application/problem+json",
                        "{method} {uri} answered {status}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 60, "{checked} calls checked");
}

/// The validation rules are in the document, so that a request valid under it is accepted.
#[test]
fn the_document_states_the_validation_rules() {
    let document = serde_json::to_value(bff::openapi()).expect("the document as JSON");
    let schemas = &document["components"]["schemas"];
    let percent = schemas["RuleBody"]["oneOf"]
        .as_array()
        .expect("rule variants")
        .iter()
        .find(|variant| variant["properties"]["basis_points"].is_object())
        .expect("the percent rule");
    let basis_points = &percent["properties"]["basis_points"];
    assert_eq!(
        (
            basis_points["minimum"].as_f64(),
            basis_points["maximum"].as_f64()
        ),
        (Some(1.0), Some(10_000.0))
    );
    assert_eq!(
        schemas["MoneyBody"]["properties"]["currency"]["pattern"],
        "^[A-Z]{3}$"
    );
    assert_eq!(
        schemas["NewPartner"]["properties"]["name"]["maxLength"],
        200
    );
    assert_eq!(schemas["NewContent"]["properties"]["tags"]["maxItems"], 20);
    assert_eq!(
        schemas["NewCampaign"]["properties"]["valid_until"]["format"],
        "date-time"
    );
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_and_asks_who_the_caller_is() {
    let router = router().await;
    let me = call(&router, "GET", "/v1/me", Some(&admin()), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        me.body,
        json!({ "subject": "admin-1", "role": "admin", "tenant": null })
    );
    let anonymous = call(&router, "GET", "/v1/me", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let redirect = call(&router, "GET", "/ui", None, None).await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/console.js", "text/javascript; charset=utf-8"),
        ("/ui/core.js", "text/javascript; charset=utf-8"),
        ("/ui/sagas.js", "text/javascript; charset=utf-8"),
        ("/ui/records.js", "text/javascript; charset=utf-8"),
        ("/ui/console.css", "text/css; charset=utf-8"),
    ] {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let (status, headers, _) = respond(&router, request).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(policy.starts_with("default-src 'self'"), "{policy}");
    }
}
