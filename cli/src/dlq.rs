//! `pulsaga dlq list|show|redrive`: the dead letters of every service, through the API with an
//! admin's token (the one `pulsaga up` prints, or `pulsaga token --role admin`), so that a
//! re-drive is recorded with the token's subject as its actor.

use crate::client::ApiClient;
use crate::inspect::{Output, json, text};
use anyhow::Context;
use serde_json::{Value, json};

/// Where the API is and who calls it.
#[derive(Debug, Clone, clap::Args)]
pub struct Caller {
    /// The API's base URL.
    #[arg(
        long,
        env = "PULSAGA_API",
        default_value = "http://127.0.0.1:7100",
        global = true
    )]
    pub api: String,
    /// An admin's bearer token.
    #[arg(long, env = "PULSAGA_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Dead letters newest first, with each dead-letter topic's counts.
    List {
        /// Only this service's.
        #[arg(long)]
        service: Option<String>,
        /// Only this topic's (its short name).
        #[arg(long)]
        topic: Option<String>,
        /// pending, redriven or all.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One dead letter: why it failed, its properties and its body decoded.
    Show { id: uuid::Uuid },
    /// Queue a dead letter's message on its topic again.
    Redrive {
        id: uuid::Uuid,
        /// Why, recorded with the re-drive.
        #[arg(long)]
        reason: Option<String>,
    },
}

async fn call(
    caller: &Caller,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let token = caller.token.as_deref().context(
        "an admin token is needed: --token or PULSAGA_TOKEN (`pulsaga token --role admin`)",
    )?;
    let (status, answer) = ApiClient::new(&caller.api)
        .send(method, path, token, body)
        .await?;
    anyhow::ensure!(
        status.is_success(),
        "{path}: {status} {}",
        answer["detail"].as_str().unwrap_or_default()
    );
    Ok(answer)
}

pub async fn run(command: DlqCommand, caller: &Caller, output: Output) -> anyhow::Result<()> {
    match command {
        DlqCommand::List {
            service,
            topic,
            status,
            limit,
        } => {
            let mut query = vec![format!("status={status}"), format!("limit={limit}")];
            query.extend(service.map(|s| format!("service={s}")));
            query.extend(topic.map(|t| format!("topic={t}")));
            let page = call(
                caller,
                reqwest::Method::GET,
                &format!("/v1/dead-letters?{}", query.join("&")),
                None,
            )
            .await?;
            if output == Output::Json {
                return json(&page);
            }
            print_list(&page);
            Ok(())
        }
        DlqCommand::Show { id } => {
            let letter = call(
                caller,
                reqwest::Method::GET,
                &format!("/v1/dead-letters/{id}"),
                None,
            )
            .await?;
            if output == Output::Json {
                return json(&letter);
            }
            print_letter(&letter)
        }
        DlqCommand::Redrive { id, reason } => {
            let letter = call(
                caller,
                reqwest::Method::POST,
                &format!("/v1/dead-letters/{id}/redrive"),
                Some(json!({ "reason": reason })),
            )
            .await?;
            if output == Output::Json {
                return json(&letter);
            }
            println!(
                "re-driven to {} by {}",
                text(&letter, "topic"),
                text(&letter, "redriven_by")
            );
            Ok(())
        }
    }
}

fn print_list(page: &Value) {
    println!(
        "{:<12} {:<48} {:>7} {:>8}",
        "service", "dead-letter topic", "pending", "redriven"
    );
    for topic in page["topics"].as_array().into_iter().flatten() {
        println!(
            "{:<12} {:<48} {:>7} {:>8}",
            text(topic, "service"),
            format!(
                "{}-{}-DLQ",
                text(topic, "topic"),
                text(topic, "subscription")
            ),
            topic["pending"],
            topic["redriven"]
        );
    }
    println!();
    println!(
        "{:<38} {:<34} {:<18} {:<26} error",
        "id", "topic", "cause", "dead-lettered"
    );
    for letter in page["dead_letters"].as_array().into_iter().flatten() {
        println!(
            "{:<38} {:<34} {:<18} {:<26} {}",
            text(letter, "id"),
            text(letter, "topic"),
            text(letter, "cause"),
            text(letter, "dead_lettered_at"),
            text(letter, "error")
        );
    }
}

fn print_letter(letter: &Value) -> anyhow::Result<()> {
    for key in [
        "id",
        "service",
        "topic",
        "dead_letter_topic",
        "key",
        "message_type",
        "cause",
        "error",
        "dead_lettered_at",
        "status",
        "redriven_at",
        "redriven_by",
        "redrive_reason",
    ] {
        println!("{key:<18} {}", text(letter, key));
    }
    println!("{:<18} {}", "attempts", letter["attempts"]);
    println!("properties:");
    println!("{}", serde_json::to_string_pretty(&letter["properties"])?);
    println!("body:");
    println!("{}", serde_json::to_string_pretty(&letter["body"])?);
    Ok(())
}
