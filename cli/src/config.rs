//! `wasmq config ...`: a queue's settings and secret grants, which its tasks read through the
//! host API's `config` (docs/host-api.md).

use clap::Subcommand;

use super::table::Table;
use super::{Global, Outcome, exit, value};
use wasmq::queue::QueueName;
use wasmq::sandbox::host::MAX_CONFIG_KEY;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set a value that the queue's tasks read with `config(KEY)`.
    Set {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
        #[arg(value_parser = key)]
        key: String,
        value: String,
    },
    /// Remove a value.
    Unset {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
        #[arg(value_parser = key)]
        key: String,
    },
    /// Let the queue's tasks read the secret NAME, whose value workers hold (`wasmq worker
    /// --secret NAME=@FILE`); only the grant is stored in Redis.
    Grant {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
        #[arg(value_parser = secret_name)]
        name: String,
    },
    /// Take a grant back.
    Revoke {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
        #[arg(value_parser = secret_name)]
        name: String,
    },
    /// A queue's values and granted secret names (never secret values: Redis has none).
    List {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn key(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_CONFIG_KEY {
        return Err(format!("a key is 1 to {MAX_CONFIG_KEY} bytes"));
    }
    Ok(s.to_string())
}

/// A secret's name: letters, digits, `_`, `-` and `.`, at most 128 bytes (it appears in
/// commands, logs and flags).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(format!("invalid secret name {name:?}: use 1 to 128 letters, digits, `_`, `-` or `.`"));
    }
    Ok(())
}

fn secret_name(s: &str) -> Result<String, String> {
    check_name(s).map(|()| s.to_string())
}

pub async fn run(g: &Global, c: ConfigCommand) -> Outcome {
    let client = g.client().await?;
    match c {
        ConfigCommand::Set { queue, key, value } => {
            let existed = client.set_config(&queue, &key, Some(&value)).await?;
            println!("{queue}: {key} {}", if existed { "changed" } else { "set" });
        }
        ConfigCommand::Unset { queue, key } => {
            if !client.set_config(&queue, &key, None).await? {
                eprintln!("error: queue {queue} has no config key {key:?}");
                return Ok(exit::ERROR);
            }
            println!("{queue}: {key} removed");
        }
        ConfigCommand::Grant { queue, name } => {
            let new = client.set_grant(&queue, &name, true).await?;
            println!("{queue}: secret {name} {}", if new { "granted" } else { "was granted already" });
        }
        ConfigCommand::Revoke { queue, name } => {
            if !client.set_grant(&queue, &name, false).await? {
                eprintln!("error: queue {queue} is not granted the secret {name}");
                return Ok(exit::ERROR);
            }
            println!("{queue}: secret {name} revoked");
        }
        ConfigCommand::List { queue, json } => {
            let mut values: Vec<(String, String)> = client.config(&queue).await?.into_iter().collect();
            values.sort();
            let grants = client.grants(&queue).await?;
            if json {
                let values: serde_json::Map<String, serde_json::Value> = values.into_iter().map(|(k, v)| (k, v.into())).collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"queue": queue.to_string(), "values": values, "secrets": grants}))?);
            } else {
                let mut t = Table::new(&["KEY", "VALUE"]);
                for (k, v) in values {
                    t.row(vec![k, v]);
                }
                for name in grants {
                    t.row(vec![name, "(secret, held by workers)".into()]);
                }
                print!("{}", t.render());
            }
        }
    }
    Ok(exit::OK)
}
