//! The toolchains and builds of the example tasks in other languages, from the command line (CI
//! installs them up front with it):
//!
//! ```sh
//! cargo run -p wasmq-testkit --bin lang-tools -- install   # npm and a venv under target/lang-tools
//! cargo run -p wasmq-testkit --bin lang-tools -- build     # the modules, into target/lang-tasks
//! cargo run -p wasmq-testkit --bin lang-tools -- tables    # regenerate the Unicode tables
//! ```

use std::process::ExitCode;
use std::time::Instant;

use wasmq_testkit::languages::{self, Language, Layout};

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "install" => install(),
        "build" => build(),
        "tables" => tables(),
        _ => {
            eprintln!("usage: lang-tools install | build | tables");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn install() -> Result<(), languages::LanguageError> {
    let layout = Layout::find()?;
    for lang in [Language::JavaScript, Language::Python] {
        let start = Instant::now();
        languages::install(&layout, lang)?;
        let what = if lang == Language::JavaScript { "componentize-js (npm)" } else { "componentize-py and ziglang (venv)" };
        println!("{what}: ready in {:.1} s, under {}", start.elapsed().as_secs_f64(), layout.tools.display());
    }
    Ok(())
}

fn build() -> Result<(), languages::LanguageError> {
    let layout = Layout::find()?;
    for lang in Language::ALL {
        let start = Instant::now();
        let module = languages::build_in(&layout, lang)?;
        let size = std::fs::metadata(&module).map(|m| m.len()).unwrap_or(0);
        println!("{}: {} ({size} bytes) in {:.1} s", lang.name(), module.display(), start.elapsed().as_secs_f64());
    }
    Ok(())
}

fn tables() -> Result<(), languages::LanguageError> {
    let layout = Layout::find()?;
    let stale = languages::generated_tables(&layout.root, true)?;
    if stale.is_empty() {
        println!("the generated tables are up to date");
    }
    for t in stale {
        println!("rewrote {}", t.path.display());
    }
    Ok(())
}
