//! docker-compose.yml runs what the binary can run: every container built from the Dockerfile
//! serves a process of SPEC §7, sets only variables that process reads, and publishes its port.

use saphyr::{LoadableYamlNode, Yaml};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;

/// The processes SPEC §7 has `pulsaga serve` run, each in a container of its own.
const PROCESSES: [&str; 7] = [
    "bff",
    "campaigns",
    "tracking",
    "commissions",
    "payments",
    "sagas",
    "payout-sim",
];

/// What a process needs set in a container: no default (JWT_SECRET), or one pointing at 127.0.0.1.
fn required(process: &str) -> &'static [&'static str] {
    match process {
        "payout-sim" => &[],
        "payments" => &[
            "DATABASE_URL",
            "PULSAR_URL",
            "PULSAR_ADMIN_URL",
            "SERVICE_TOKEN",
            "PAYOUT_PROVIDER_URL",
        ],
        "bff" => &[
            "PULSAR_URL",
            "PULSAR_ADMIN_URL",
            "CAMPAIGNS_URL",
            "TRACKING_URL",
            "COMMISSIONS_URL",
            "PAYMENTS_URL",
            "SAGAS_URL",
            "SERVICE_TOKEN",
            "JWT_SECRET",
        ],
        _ => &[
            "DATABASE_URL",
            "PULSAR_URL",
            "PULSAR_ADMIN_URL",
            "SERVICE_TOKEN",
        ],
    }
}

/// A service of the compose file built from the Dockerfile (its environment in mapping form).
#[derive(Debug)]
struct Container {
    name: String,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    ports: Vec<String>,
}

fn containers(compose: &str) -> Vec<Container> {
    let documents = Yaml::load_from_str(compose).expect("the compose file is YAML");
    let services = documents
        .first()
        .and_then(|document| document.as_mapping_get("services"))
        .and_then(Yaml::as_mapping)
        .expect("the compose file has a services mapping");
    let strings = |node: Option<&Yaml>| -> Vec<String> {
        node.and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
            .map(str::to_owned)
            .collect()
    };
    services
        .iter()
        .filter(|(_, service)| service.contains_mapping_key("build"))
        .map(|(name, service)| Container {
            name: name.as_str().expect("service names are strings").to_owned(),
            command: strings(service.as_mapping_get("command")),
            environment: service
                .as_mapping_get("environment")
                .and_then(Yaml::as_mapping)
                .into_iter()
                .flatten()
                .map(|(key, value)| {
                    let key = key.as_str().expect("variable names are strings");
                    let value = value.as_str().unwrap_or("(not a string)");
                    (key.to_owned(), value.to_owned())
                })
                .collect(),
            ports: strings(service.as_mapping_get("ports")),
        })
        .collect()
}

/// The environment variables `pulsaga serve <process> --help` lists, or why it cannot run.
fn variables_read(process: &str) -> Result<Vec<String>, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args(["serve", process, "--help"])
        .env_clear()
        .output()
        .expect("run pulsaga");
    if !output.status.success() {
        let error = String::from_utf8_lossy(&output.stderr);
        return Err(error.lines().next().unwrap_or_default().to_owned());
    }
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    // `[env: NAME=value]`, or `[env: NAME]` where the value is hidden.
    Ok(help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect())
}

/// The process a container's command serves: `serve <process> [flags]`.
fn served(command: &[String]) -> Option<&str> {
    match command {
        [serve, process, ..] if serve == "serve" => Some(process),
        _ => None,
    }
}

/// Where the process listens: `--listen` in its command, else `PULSAGA_LISTEN`.
fn listen(container: &Container) -> Option<SocketAddr> {
    let command = &container.command;
    let flag = command.iter().position(|arg| arg == "--listen");
    flag.and_then(|i| command.get(i + 1))
        .or(container.environment.get("PULSAGA_LISTEN"))?
        .parse()
        .ok()
}

/// Everything in `compose` that the binary would not run as the file says.
fn problems(compose: &str) -> Vec<String> {
    let containers = containers(compose);
    let mut problems = Vec::new();
    let mut listening = BTreeMap::new();
    for container in &containers {
        let mut problem = |what: String| problems.push(format!("{}: {what}", container.name));
        let Some(process) = served(&container.command) else {
            problem(format!("{:?} is not `serve <process>`", container.command));
            continue;
        };
        if !PROCESSES.contains(&process) {
            problem(format!("serves {process}, not a process of SPEC §7"));
        }
        match variables_read(process) {
            Err(error) => problem(format!(
                "the binary cannot run `pulsaga serve {process}`: {error}"
            )),
            Ok(read) => {
                for name in container.environment.keys().filter(|n| !read.contains(n)) {
                    problem(format!(
                        "sets {name}, which `pulsaga serve {process} --help` does not list"
                    ));
                }
            }
        }
        for name in required(process) {
            if !container.environment.contains_key(*name) {
                problem(format!("does not set {name}"));
            }
        }
        let Some(address) = listen(container) else {
            problem("has no --listen or PULSAGA_LISTEN (the default is 127.0.0.1)".into());
            continue;
        };
        if !address.ip().is_unspecified() {
            problem(format!(
                "listens on {address}, out of other containers' reach"
            ));
        }
        // The API is for everyone; a query API or the simulator only for this host.
        let port = address.port();
        let published = match process {
            "bff" => format!("{port}:{port}"),
            _ => format!("127.0.0.1:{port}:{port}"),
        };
        if container.ports != [published.clone()] {
            problem(format!(
                "publishes {:?}, not just \"{published}\"",
                container.ports
            ));
        }
        listening.insert(container.name.as_str(), port);
    }
    // A URL naming another container of the file must use the port that one listens on.
    for container in &containers {
        for (name, value) in &container.environment {
            let Ok(url) = reqwest::Url::parse(value) else {
                continue;
            };
            if let Some(host) = url.host_str()
                && let Some(&port) = listening.get(host)
                && url.port() != Some(port)
            {
                problems.push(format!(
                    "{}: {name} is {value}, but {host} listens on {port}",
                    container.name
                ));
            }
        }
    }
    for process in PROCESSES {
        if !containers
            .iter()
            .any(|c| served(&c.command) == Some(process))
        {
            problems.push(format!("no container serves {process}"));
        }
    }
    problems
}

#[test]
fn the_compose_file_runs_every_process_with_only_the_settings_it_reads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker-compose.yml");
    let compose = std::fs::read_to_string(&path).expect("docker-compose.yml at the workspace root");
    assert_eq!(
        problems(&compose),
        Vec::<String>::new(),
        "docker-compose.yml and `pulsaga serve` disagree"
    );
}

#[test]
fn a_compose_file_the_binary_cannot_run_is_reported() {
    let compose = r#"
services:
  postgres:
    image: postgres:16
  tracking:
    build: .
    command: ["serve", "tracking"]
    environment:
      PULSAGA_LISTEN: "0.0.0.0:7102"
      PULSAR_URL: "pulsar://pulsar:6650"
      PULSAR_ADMIN_URL: "http://pulsar:8080"
      TRACKING_VERBOSE: "1"
    ports: ["7002:7102"]
  payments:
    build: .
    command: ["serve", "payments", "--listen", "127.0.0.1:7104"]
    environment:
      DATABASE_URL: "postgres://postgres@postgres:5432/postgres"
      PULSAR_URL: "pulsar://pulsar:6650"
      PULSAR_ADMIN_URL: "http://pulsar:8080"
      PAYOUT_PROVIDER_URL: "http://tracking:7199"
    ports: ["7104:7104"]
  broker:
    build: .
    command: ["broker"]
"#;
    assert_eq!(
        problems(compose),
        [
            "tracking: sets TRACKING_VERBOSE, which `pulsaga serve tracking --help` does not list",
            "tracking: does not set DATABASE_URL",
            "tracking: does not set SERVICE_TOKEN",
            "tracking: publishes [\"7002:7102\"], not just \"127.0.0.1:7102:7102\"",
            "payments: does not set SERVICE_TOKEN",
            "payments: listens on 127.0.0.1:7104, out of other containers' reach",
            "payments: publishes [\"7104:7104\"], not just \"127.0.0.1:7104:7104\"",
            "broker: [\"broker\"] is not `serve <process>`",
            "payments: PAYOUT_PROVIDER_URL is http://tracking:7199, but tracking listens on 7102",
            "no container serves bff",
            "no container serves campaigns",
            "no container serves commissions",
            "no container serves sagas",
            "no container serves payout-sim",
        ]
    );
}

/// The image of the compose file's `pulsar` service.
fn pulsar_image(compose: &str) -> Option<String> {
    let documents = Yaml::load_from_str(compose).expect("the compose file is YAML");
    documents
        .first()?
        .as_mapping_get("services")?
        .as_mapping_get("pulsar")?
        .as_mapping_get("image")?
        .as_str()
        .map(str::to_owned)
}

#[test]
fn the_compose_file_runs_the_pulsar_release_the_tests_run() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker-compose.yml");
    let compose = std::fs::read_to_string(&path).expect("docker-compose.yml at the workspace root");
    let expected = format!("apachepulsar/pulsar:{}", messaging::broker::PULSAR_VERSION);
    assert_eq!(pulsar_image(&compose), Some(expected));
    let other = compose.replace(messaging::broker::PULSAR_VERSION, "3.0.0");
    assert_ne!(
        pulsar_image(&other).as_deref(),
        Some(format!("apachepulsar/pulsar:{}", messaging::broker::PULSAR_VERSION).as_str())
    );
}
