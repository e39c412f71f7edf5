//! `wasmq module push | list | rm`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::table::Table;
use super::{Global, Outcome, exit, value};
use wasmq::parse;
use wasmq::sandbox::{Sandbox, SandboxConfig};
use wasmq::store::ModuleStore;

#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Validate (compile) a module and store it under its SHA-256; point a name at it.
    Push(PushArgs),
    /// List stored modules: names, hash, size, kind, push time.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a module (by name or hash) and every name pointing at it. Refuses while unfinished
    /// tasks reference it.
    Rm {
        /// A module name or a 64-hex-digit hash.
        module: String,
        /// Remove it even if unfinished tasks reference it (they will fail as unknown_module).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The module: .wasm (core module or component) or .wat text.
    pub file: PathBuf,
    /// Name to point at the module (default: the file name without extension).
    #[arg(long)]
    pub name: Option<String>,
    /// Store it without a name.
    #[arg(long, conflicts_with = "name")]
    pub no_name: bool,
    /// Largest module accepted.
    #[arg(long, default_value = value::text_size(wasmq::store::DEFAULT_MAX_MODULE_SIZE), value_parser = value::size)]
    pub max_module_size: u64,
}

pub async fn run(g: &Global, c: ModuleCommand) -> Outcome {
    match c {
        ModuleCommand::Push(a) => push(g, a).await,
        ModuleCommand::List { json } => list(g, json).await,
        ModuleCommand::Rm { module, force } => {
            let client = g.client().await?;
            let sha = client.store().remove(&module, force).await?;
            println!("removed {sha}");
            Ok(exit::OK)
        }
    }
}

async fn push(g: &Global, a: PushArgs) -> Outcome {
    let meta = std::fs::metadata(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    if meta.len() > a.max_module_size {
        anyhow::bail!("{} is {} bytes, more than the limit of {} bytes (--max-module-size)", a.file.display(), meta.len(), a.max_module_size);
    }
    let bytes = std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let name = match (&a.name, a.no_name) {
        (_, true) => None,
        (Some(n), false) => Some(n.clone()),
        (None, false) => {
            let stem = a.file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            Some(stem)
        }
    };
    if let Some(n) = &name {
        parse::module_name(n).context("choose another name with --name")?;
    }
    // Compile before storing anything: what is in the store is known to be runnable.
    let (binary, _) = wasmq::sandbox::prepare(&bytes).with_context(|| format!("{} was not pushed", a.file.display()))?;
    let binary = binary.into_owned();
    let kind = tokio::task::spawn_blocking(move || {
        // The engine a worker with default settings has (pooling allocator included), so that a
        // module that no default worker could instantiate is refused here, not at run time.
        let sandbox = Sandbox::new(SandboxConfig { max_concurrency: 1, cache_dir: None, ..SandboxConfig::default() })?;
        let kind = sandbox.validate(&binary)?;
        Ok::<_, wasmq::sandbox::SandboxError>((kind, binary))
    })
    .await?;
    let (kind, binary) = kind.with_context(|| format!("{} was not pushed", a.file.display()))?;
    let client = g.client().await?;
    let store = ModuleStore::new(client.conn(), client.db().keys().clone(), a.max_module_size);
    let pushed = store.push(&binary, kind, name.as_deref()).await?;
    let what = if pushed.stored { "stored" } else { "already stored" };
    match &pushed.name {
        Some(n) => println!("{n} {} ({}, {} bytes, {what})", pushed.sha256, kind.as_str(), binary.len()),
        None => println!("{} ({}, {} bytes, {what})", pushed.sha256, kind.as_str(), binary.len()),
    }
    if let (Some(n), Some(prev)) = (&pushed.name, &pushed.previous) {
        // The previous hash is whatever the name pointed to in Redis, which need not be a hash.
        eprintln!("{n} moved from {}", wasmq::text::escape_control(prev, false));
    }
    Ok(exit::OK)
}

async fn list(g: &Global, json: bool) -> Outcome {
    let client = g.client().await?;
    let modules = client.store().list().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&modules)?);
        return Ok(exit::OK);
    }
    let mut t = Table::new(&["NAME", "SHA256", "SIZE", "KIND", "PUSHED"]);
    for m in &modules {
        t.row(vec![
            if m.names.is_empty() { "-".into() } else { m.names.join(",") },
            m.sha256.clone(),
            parse::format_size(m.size),
            m.kind.map_or("?", |k| k.as_str()).to_string(),
            parse::format_ms(m.pushed_ms),
        ]);
    }
    print!("{}", t.render());
    Ok(exit::OK)
}
