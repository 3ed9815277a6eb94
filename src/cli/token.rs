//! `amtsbote token create/revoke/list`: the HTTP interface's bearer tokens. They work on the
//! machine, on the ledger the configuration names, without a token of their own: whoever
//! can read the data directory (and the ledger) is an administrator already.

use std::process::ExitCode;

use clap::Subcommand;

use crate::access::{Role, Token};
use crate::app::open_ledger;
use crate::config::Config;
use crate::ledger::{LedgerError, NewToken};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (once: only its hash is kept). The token alone goes to
    /// stdout, so `TOKEN=$(amtsbote token create --role admin)` works.
    Create {
        /// admin, operator or tenant:<id> (a configured tenant).
        #[arg(long)]
        role: String,
        /// Its name in lists and logs (default: the role and random characters).
        #[arg(long)]
        name: Option<String>,
    },
    /// Refuse a token from now on (in every process sharing the ledger).
    Revoke {
        name: String,
    },
    /// Every token with its role and times (never the token itself).
    List {
        /// JSON for scripts: one object per token.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { role, name } => create(config, &role, name).await,
        TokenCommand::Revoke { name } => revoke(config, &name).await,
        TokenCommand::List { json } => list(config, json).await,
    }
}

async fn create(config: &Config, role: &str, name: Option<String>) -> anyhow::Result<ExitCode> {
    let checked = role.parse::<Role>().and_then(|role| role.check_against(&config.tenants).map(|()| role));
    let role = match checked {
        Ok(role) => role,
        Err(e) => {
            eprintln!("amtsbote: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let name = match name {
        Some(name) => name,
        None => crate::access::default_name(&role)?,
    };
    if let Err(e) = crate::access::check_name(&name) {
        eprintln!("amtsbote: {e}");
        return Ok(ExitCode::from(2));
    }
    let token = Token::generate()?;
    let ledger = open_ledger(config).await?;
    match ledger.create_token(&NewToken { name: name.clone(), role: role.to_string(), sha256: token.sha256() }).await {
        Ok(_) => {
            println!("{}", token.expose());
            eprintln!("token {name} ({role}) created. It is shown only now; send it as `Authorization: Bearer <token>`.");
            eprintln!("revoke it with: amtsbote token revoke {name}");
            Ok(ExitCode::SUCCESS)
        }
        Err(LedgerError::TokenNameTaken(_)) => {
            eprintln!("amtsbote: a token named {name} exists already (revoked tokens keep their names); choose another --name");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

async fn revoke(config: &Config, name: &str) -> anyhow::Result<ExitCode> {
    let ledger = open_ledger(config).await?;
    match ledger.revoke_token(name).await? {
        Some(token) => {
            let at = token.revoked_at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default();
            println!("token {} ({}) revoked at {at}", token.name, token.role);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("no token is named {name:?} (amtsbote token list)");
            Ok(ExitCode::from(1))
        }
    }
}

async fn list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let ledger = open_ledger(config).await?;
    let tokens = ledger.tokens().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tokens)?);
        return Ok(ExitCode::SUCCESS);
    }
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string());
    println!("{:<32} {:<20} {:<16} {:<16} revoked (UTC)", "name", "role", "created", "last used");
    for t in &tokens {
        println!("{:<32} {:<20} {:<16} {:<16} {}", t.name, t.role, time(Some(t.created_at)), time(t.last_used_at), time(t.revoked_at));
    }
    if tokens.is_empty() {
        eprintln!("no tokens yet: amtsbote token create --role admin");
    }
    Ok(ExitCode::SUCCESS)
}
