//! What `up` starts once PostgreSQL and the broker are there: the databases migrated and the
//! namespace provisioned, then the payout simulator, every service and its replicas, and the API,
//! each with its environment, until the API is ready.

use super::process::{Process, wait_ready};
use super::{Options, port};
use crate::proxy::Proxy;
use crate::settings::{Infrastructure, Jwt};
use crate::{Service, serve};
use anyhow::Context;
use messaging::ServiceToken;
use std::net::SocketAddr;

/// What [`start_processes`] started, beside its children.
pub(super) struct Started {
    pub(super) api: String,
    pub(super) urls: Vec<(Service, String)>,
    /// The payout simulator's address.
    pub(super) sim: String,
    pub(super) service_token: ServiceToken,
    pub(super) database_proxy: Option<Proxy>,
}

/// Prepares the databases and the namespace, then starts the processes into `children` on
/// `infrastructure` (reached through a proxy in front of PostgreSQL when asked for, and through
/// the broker's proxy at `broker_address` if it has one), and waits until the API is ready.
pub(super) async fn start_processes(
    options: &Options,
    secret: &[u8],
    jwt: &Jwt,
    infrastructure: &Infrastructure,
    broker_address: Option<SocketAddr>,
    children: &mut Vec<Process>,
) -> anyhow::Result<Started> {
    prepare(options, infrastructure).await?;
    let (database_proxy, processes_database_url) = if options.database_proxy {
        let (proxy, url) = proxied(&infrastructure.postgres.url).await?;
        (Some(proxy), url)
    } else {
        (None, infrastructure.postgres.url.clone())
    };
    let processes_pulsar_url = match broker_address {
        Some(address) => format!("pulsar://{address}"),
        None => infrastructure.pulsar_url.clone(),
    };
    let service_token = ServiceToken::random();
    let shared_env = [
        ("DATABASE_URL", processes_database_url.as_str()),
        ("PULSAR_URL", processes_pulsar_url.as_str()),
        ("PULSAR_ADMIN_URL", infrastructure.pulsar_admin_url.as_str()),
        ("SERVICE_TOKEN", service_token.expose()),
    ];
    let sim = format!("127.0.0.1:{}", port(7199, options.any_ports)?);
    children.push(Process::start(
        "payout-sim",
        &["serve", "payout-sim", "--listen", &sim],
        &[],
        options.log(),
    )?);
    let urls = start_services(options, &sim, &shared_env, children)?;
    let api_env = api_env(&urls, secret, jwt);
    let api = start_api(options, &shared_env, &api_env, children)?;
    wait_ready(&api, children).await?;
    Ok(Started {
        api,
        urls,
        sim,
        service_token,
        database_proxy,
    })
}

/// The API's own environment: where each service's query API is, and the JWT settings.
fn api_env(urls: &[(Service, String)], secret: &[u8], jwt: &Jwt) -> Vec<(&'static str, String)> {
    let names = [
        "CAMPAIGNS_URL",
        "TRACKING_URL",
        "COMMISSIONS_URL",
        "PAYMENTS_URL",
        "SAGAS_URL",
    ];
    let mut env: Vec<(&str, String)> = Service::ALL
        .iter()
        .zip(names)
        .filter_map(|(service, name)| {
            let (_, url) = urls.iter().find(|(s, _)| s == service)?;
            Some((name, url.clone()))
        })
        .collect();
    env.extend([
        ("JWT_SECRET", String::from_utf8_lossy(secret).into_owned()),
        ("JWT_ISSUER", jwt.jwt_issuer.clone()),
        ("JWT_AUDIENCE", jwt.jwt_audience.clone()),
    ]);
    env
}

/// Starts the API (`pulsaga serve bff`) with the processes' environment (`shared`, from which it
/// takes the broker and the service token) and its own (`env`: the services' URLs, the JWT
/// settings); returns its URL.
fn start_api(
    options: &Options,
    shared: &[(&str, &str)],
    env: &[(&str, String)],
    children: &mut Vec<Process>,
) -> anyhow::Result<String> {
    let listen = if options.any_ports {
        SocketAddr::from(([127, 0, 0, 1], port(0, true)?))
    } else {
        options.listen
    };
    let env: Vec<(&str, &str)> = shared
        .iter()
        .filter(|(name, _)| *name != "DATABASE_URL")
        .copied()
        .chain(env.iter().map(|(name, value)| (*name, value.as_str())))
        .collect();
    children.push(Process::start(
        "bff",
        &["serve", "bff", "--listen", &listen.to_string()],
        &env,
        options.log(),
    )?);
    Ok(format!("http://{listen}"))
}

/// Starts every replica of every service (`pulsaga serve`), the first on the service's port and
/// the others on free ones; returns each service's first replica's URL.
fn start_services(
    options: &Options,
    simulator: &str,
    env: &[(&str, &str)],
    children: &mut Vec<Process>,
) -> anyhow::Result<Vec<(Service, String)>> {
    let provider = format!("http://{simulator}");
    let mut urls = Vec::new();
    for service in Service::ALL {
        let database = format!("{}{}", options.database_prefix, service.name());
        for replica in 1..=options.replicas {
            let default_port = match replica {
                1 => crate::default_listen(service).port(),
                _ => 0,
            };
            let listen = format!(
                "127.0.0.1:{}",
                port(default_port, options.any_ports || replica > 1)?
            );
            let mut args = vec![
                "serve",
                service.name(),
                "--listen",
                &listen,
                "--database",
                &database,
            ];
            if service == Service::Payments {
                args.extend(["--payout-provider-url", &provider]);
            }
            let process = match replica {
                1 => service.name().to_owned(),
                _ => format!("{}-{replica}", service.name()),
            };
            children.push(Process::start(process, &args, env, options.log())?);
            if replica == 1 {
                urls.push((service, format!("http://{listen}")));
            }
        }
    }
    Ok(urls)
}

/// A proxy to the PostgreSQL server at `database_url`, and the URL that reaches it through it.
async fn proxied(database_url: &str) -> anyhow::Result<(Proxy, String)> {
    let mut url = reqwest::Url::parse(database_url).context("DATABASE_URL is not a URL")?;
    let host = url
        .host_str()
        .context("DATABASE_URL names no host")?
        .to_owned();
    let port = url.port().unwrap_or(5432);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .with_context(|| format!("{host} resolves to no address"))?;
    let proxy = Proxy::start(target).await?;
    url.set_host(Some("127.0.0.1"))?;
    url.set_port(Some(proxy.address().port()))
        .map_err(|()| anyhow::anyhow!("DATABASE_URL cannot take a port"))?;
    Ok((proxy, url.to_string()))
}

/// Creates and migrates every service's database and provisions the Pulsar namespace.
async fn prepare(options: &Options, infrastructure: &Infrastructure) -> anyhow::Result<()> {
    serve::provision(infrastructure).await?;
    for service in Service::ALL {
        let name = format!("{}{}", options.database_prefix, service.name());
        serve::database(service, &name, infrastructure)
            .await?
            .close()
            .await;
    }
    Ok(())
}
